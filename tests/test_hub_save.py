"""The canonical student folder: timm, transformers and pipeline load it with identical logits; saves are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, TimmWrapperConfig, TimmWrapperForImageClassification

import ltkd_hf.hub.save as hub_save
from ltkd_hf.hub import load_student, save_student

LABELS = ["cat", "dog", "frog", "ship"]
# a small input keeps the CPU cost low; recording it in the folder also checks that data_config reaches the
# image processor transformers builds from config.json
DATA_CONFIG = {"input_size": (3, 48, 48), "mean": (0.4, 0.45, 0.5), "std": (0.25, 0.2, 0.3), "crop_pct": 1.0}


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(57, 43, 3) * 255).astype("uint8"))


def _timm_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=len(LABELS)).eval()


def _wrapper_student(steps: int = 2) -> TimmWrapperForImageClassification:
    """A student as the trainer holds it: a transformers TimmWrapper around a timm model, after a few SGD steps."""
    torch.manual_seed(1)
    config = TimmWrapperConfig(architecture="test_efficientnet", num_labels=len(LABELS))
    model = TimmWrapperForImageClassification(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        loss = model(pixel_values=torch.randn(4, 3, 48, 48), labels=torch.tensor([0, 1, 2, 3])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def assert_three_loaders_agree(folder: Path, reference: torch.nn.Module, labels: list[str] = LABELS) -> None:
    """timm local-dir, AutoModelForImageClassification and pipeline all reproduce ``reference``'s outputs."""
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(x)
        from_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        auto = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
        assert torch.equal(from_timm(x), expected)
        assert torch.equal(auto(pixel_values=x).logits, expected)
        assert torch.equal(load_student(str(folder))(x), expected)
        assert not load_student(str(folder)).training
    assert auto.config.id2label == dict(enumerate(labels))

    # pipeline: its scores are the softmax of the logits timm gives on timm's own eval transform of the image
    image = _image()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=from_timm))
    with torch.no_grad():
        probs = from_timm(transform(image).unsqueeze(0)).softmax(-1)[0]
    classifier = transformers.pipeline("image-classification", model=str(folder))
    scores = {row["label"]: row["score"] for row in classifier(image, top_k=len(labels))}
    assert set(scores) == set(labels)
    for index, label in enumerate(labels):
        assert scores[label] == pytest.approx(probs[index].item(), abs=1e-6)


def test_timm_model_folder_loads_identically_everywhere(tmp_path: Path) -> None:
    model = _timm_student()
    folder = save_student(model, tmp_path / "student", label_names=LABELS, data_config=DATA_CONFIG)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    # weights under timm's own key names, byte-identical to the model's state dict
    stored = load_file(folder / "model.safetensors")
    assert set(stored) == set(model.state_dict())
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_resnet"
    assert config["num_classes"] == len(LABELS)
    assert config["label_names"] == LABELS
    assert "num_classes" not in config.get("model_args", {})  # lesson 6: transformers passes it itself
    assert config["pretrained_cfg"]["input_size"] == [3, 48, 48]
    assert config["pretrained_cfg"]["mean"] == list(DATA_CONFIG["mean"])
    assert_three_loaders_agree(folder, model)


def test_trained_wrapper_folder_loads_identically_everywhere(tmp_path: Path) -> None:
    wrapper = _wrapper_student()
    folder = save_student(
        wrapper, tmp_path / "student", label_names=LABELS, data_config=DATA_CONFIG,
        extra_config={"ltkd": {"loss": "ltkd", "alpha": 6.0, "groups": {"names": ["head", "medium", "tail"]}}},
    )
    stored = load_file(folder / "model.safetensors")
    assert not any(k.startswith("timm_model.") for k in stored)  # timm key names, not the wrapper's
    assert json.loads((folder / "config.json").read_text())["ltkd"]["alpha"] == 6.0
    assert_three_loaders_agree(folder, wrapper.timm_model)


def test_folder_written_by_transformers_save_pretrained_converts(tmp_path: Path) -> None:
    # save_pretrained's own folder does not load in timm (prefixed keys); loading it in transformers and
    # re-saving with save_student gives the canonical folder
    wrapper = _wrapper_student(steps=1)
    wrapper.save_pretrained(tmp_path / "hf")
    reloaded = AutoModelForImageClassification.from_pretrained(str(tmp_path / "hf")).eval()
    folder = save_student(reloaded, tmp_path / "student", label_names=LABELS, data_config=DATA_CONFIG)
    assert_three_loaders_agree(folder, wrapper.timm_model)


def test_cifar_architecture_folder_loads_identically_everywhere(tmp_path: Path) -> None:
    # a paper architecture, registered with timm by `import ltkd_hf` (done by importing ltkd_hf.hub)
    torch.manual_seed(4)
    model = timm.create_model("cifar_resnet8x4", num_classes=len(LABELS)).eval()
    folder = save_student(model, tmp_path / "student", label_names=LABELS, data_config=DATA_CONFIG)
    assert json.loads((folder / "config.json").read_text())["architecture"] == "cifar_resnet8x4"
    assert_three_loaders_agree(folder, model)


@pytest.mark.parametrize("failing", ["weights", "config"])
def test_interrupted_save_leaves_previous_folder(tmp_path: Path, monkeypatch, failing: str) -> None:
    first = _timm_student()
    folder = save_student(first, tmp_path / "student", label_names=LABELS)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "state.txt").write_text("kept")
    before = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}

    def crash_after_partial_write(*args, **kwargs):
        path = next(a for a in args if isinstance(a, (str, Path)))
        Path(path).write_bytes(b"partial")  # what a kill mid-write leaves behind
        raise OSError("disk full")

    target = "save_file" if failing == "weights" else "save_config_for_hf"
    monkeypatch.setattr(hub_save, target, crash_after_partial_write)
    second = timm.create_model("test_resnet", num_classes=len(LABELS))
    with pytest.raises(OSError, match="disk full"):
        save_student(second, folder, label_names=LABELS)

    after = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    assert after == before
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-10", "config.json", "model.safetensors"]
    assert (folder / "checkpoint-10" / "state.txt").read_text() == "kept"
    monkeypatch.undo()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(load_student(str(folder))(x), first(x))


def test_save_overwrites_previous_student(tmp_path: Path) -> None:
    folder = save_student(_timm_student(), tmp_path / "s", label_names=LABELS)
    torch.manual_seed(5)
    second = timm.create_model("test_resnet", num_classes=len(LABELS)).eval()
    save_student(second, folder, label_names=list("abcd"))
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(load_student(str(folder))(x), second(x))
    assert json.loads((folder / "config.json").read_text())["label_names"] == list("abcd")


def test_save_rejects_bad_arguments(tmp_path: Path) -> None:
    model = _timm_student()
    with pytest.raises(ValueError, match=r"label_names has 3 names but the model has num_classes=4"):
        save_student(model, tmp_path / "a", label_names=LABELS[:3])
    for names in (None, "abcd"):  # a TypeError, and four one-letter classes
        with pytest.raises(ValueError, match=rf"label_names={names!r}: pass one name per output class"):
            save_student(model, tmp_path / "a", label_names=names)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match=r"extra_config keys \['num_classes'\].*namespace"):
        save_student(model, tmp_path / "b", label_names=LABELS, extra_config={"num_classes": 3})
    with pytest.raises(ValueError, match="extra_config must be JSON-serializable"):
        save_student(model, tmp_path / "c", label_names=LABELS, extra_config={"ltkd": {"t": torch.ones(1)}})
    with pytest.raises(ValueError, match="Linear is neither a timm model nor a TimmWrapper model"):
        save_student(torch.nn.Linear(2, 2), tmp_path / "d", label_names=["a", "b"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"output_dir=.*file.*not a folder"):
        save_student(model, tmp_path / "file", label_names=LABELS)
    with pytest.raises(ValueError, match=r"output_dir=.*file/sub.* cannot be written"):
        save_student(model, tmp_path / "file" / "sub", label_names=LABELS)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_load_student_errors_name_the_fix(tmp_path: Path) -> None:
    folder = save_student(_timm_student(), tmp_path / "s", label_names=LABELS)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "cifar_not_registered_anywhere"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'cifar_not_registered_anywhere'.*`import ltkd_hf`"):
        load_student(str(folder))
    config["architecture"] = "resnet_from_the_future"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'resnet_from_the_future'.*upgrade timm"):
        load_student(str(folder))

    with pytest.raises(FileNotFoundError, match=r"path_or_id='\./nowhere/student'"):
        load_student("./nowhere/student")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder without config.json"):
        load_student(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is a file"):
        load_student(str(folder / "model.safetensors"))


def test_load_classifier_sees_the_folders_preprocessing_not_the_architectures(tmp_path: Path) -> None:
    """transformers builds the timm model of a folder from its architecture alone: its timm pretrained_cfg is
    cifar_resnet8x4's 32 px default. ``load_classifier`` gives it the folder's (48 px, other normalisation), as timm's
    own loader and transformers' image processor read them, so ``ltkd-eval`` scores at the size the model trained at."""
    from timm.data import resolve_data_config

    from ltkd_hf.models import load_classifier, unwrap_timm

    torch.manual_seed(5)
    model = timm.create_model("cifar_resnet8x4", num_classes=len(LABELS)).eval()
    folder = save_student(model, tmp_path / "student", label_names=LABELS, data_config=DATA_CONFIG)
    plain = AutoModelForImageClassification.from_pretrained(str(folder))
    assert resolve_data_config(model=unwrap_timm(plain))["input_size"] == (3, 32, 32)  # why load_classifier exists
    loaded = load_classifier(str(folder))
    config = resolve_data_config(model=unwrap_timm(loaded))
    by_timm = resolve_data_config(model=load_student(str(folder)))
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in by_timm.items()} == config
    keys = ("input_size", "mean", "std")
    assert tuple(config[k] for k in keys) == tuple(DATA_CONFIG[k] for k in keys)
    assert not loaded.training
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, model(x), rtol=1e-5, atol=1e-6)
