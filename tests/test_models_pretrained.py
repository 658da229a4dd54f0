"""Students started from checkpoints (``create_student(source, pretrained=True)``): local folders in timm's and
transformers' layouts, Hub repos on the fake Hub, timm names with a pretrained tag; the backbone is the
checkpoint's tensor for tensor, the classifier new; and the errors for what must not load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi
from timm.layers import resample_abs_pos_embed
from timm.models import save_for_hf
from transformers import AutoImageProcessor

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf.models import create_student, load_teacher, pin_hub_source, unwrap_timm

NAMES = ["ant", "bat", "cod", "doe", "eel"]
CKPT_NAMES = [f"old{i}" for i in range(10)]


def trained_like(architecture: str, num_classes: int, **kwargs) -> torch.nn.Module:
    """A model whose weights and BatchNorm statistics differ from any fresh initialisation."""
    torch.manual_seed(1)
    model = timm.create_model(architecture, num_classes=num_classes, **kwargs)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5) if key.endswith("running_var") else tensor.uniform_(-0.5, 0.5)
    return model.eval()


def timm_folder(path: Path, architecture: str, num_classes: int = 10, names=CKPT_NAMES, **kwargs):
    model = trained_like(architecture, num_classes, **kwargs)
    save_for_hf(model, path, model_config={"label_names": names} if names else None, safe_serialization=True)
    return model, path


def classifier_keys(model: torch.nn.Module) -> set[str]:
    classifier = model.pretrained_cfg["classifier"]
    return {f"{classifier}.weight", f"{classifier}.bias"}


def assert_backbone_is(student, source, skip=()):
    """Every tensor but the classifier (and ``skip``) equals the source's; returns the classifier keys."""
    bare, ours = unwrap_timm(student).state_dict(), source.state_dict()
    head = classifier_keys(source)
    assert set(bare) == set(ours)
    for key in set(bare) - head - set(skip):
        assert torch.equal(bare[key], ours[key]), key
    return head


def assert_new_classifier(student, source, num_classes):
    """The classifier is num_classes-way, shares no row with the source's, and has torch's fresh nn.Linear
    initialisation: |w| and |b| at most 1/sqrt(fan_in) (the source's were drawn from U(-0.5, 0.5))."""
    bare, ours = unwrap_timm(student), source.state_dict()
    weight_key, bias_key = sorted(classifier_keys(source), reverse=True)  # "*.weight", "*.bias"
    weight, bias = bare.state_dict()[weight_key], bare.state_dict()[bias_key]
    fan_in = ours[weight_key].shape[1]
    assert bare.num_classes == num_classes and weight.shape == (num_classes, fan_in) and bias.shape == (num_classes,)
    for row in weight:
        assert not any(torch.equal(row, old) for old in ours[weight_key])
    assert not any(b.item() in ours[bias_key].tolist() for b in bias)
    bound = 1 / math.sqrt(fan_in)
    assert weight.abs().max() <= bound and bias.abs().max() <= bound
    assert ours[weight_key].abs().max() > 2 * bound
    assert weight.std() > bound / 4  # not a zero or constant init


def features(model, x):
    with torch.no_grad():
        return unwrap_timm(model).eval().forward_features(x)


def test_local_timm_folder_cnn_backbone_loaded_classifier_new(tmp_path):
    source, folder = timm_folder(tmp_path / "ckpt", "cifar_resnet8x4")
    student = create_student(f"local-dir:{folder}", num_classes=5, label_names=NAMES, pretrained=True)
    assert_backbone_is(student, source)
    assert_new_classifier(student, source, 5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(features(student, x), features(source, x), rtol=0, atol=0)
    config = student.config
    assert config.id2label == dict(enumerate(NAMES)) and config.num_labels == 5
    assert config.architecture == "cifar_resnet8x4"
    assert (config.base_model, config.base_model_revision) == (None, None)
    assert config.base_model_source == f"local-dir:{folder.resolve()}"
    # the checkpoint's preprocessing, with this student's classes (not the checkpoint's 10 names)
    cfg = unwrap_timm(student).pretrained_cfg
    assert cfg == config.pretrained_cfg
    assert cfg["num_classes"] == 5 and cfg["label_names"] == NAMES and cfg["mean"] == (0.5071, 0.4865, 0.4409)
    assert "file" not in cfg and "source" not in cfg
    out = student(pixel_values=x, labels=torch.tensor([0, 4]))
    assert out.logits.shape == (2, 5) and out.loss.isfinite()


def test_fresh_students_keep_the_architectures_init_and_record_no_base_model(tmp_path):
    source, folder = timm_folder(tmp_path / "ckpt", "cifar_resnet8x4")
    for spec in ("cifar_resnet8x4", f"local-dir:{folder}"):
        student = create_student(spec, num_classes=5)
        stem = unwrap_timm(student).stem[0].weight  # Kaiming fan-out: std sqrt(2 / (32 * 3 * 3))
        assert stem.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.15)
        assert not torch.equal(stem, source.stem[0].weight)
        assert (student.config.base_model, student.config.base_model_source) == (None, None)
        assert student.config.pretrained_cfg["num_classes"] == 5


def test_same_classes_keep_the_classifier_and_its_names_other_names_get_a_new_one(tmp_path):
    names = ["cat", "dog", "owl"]
    source, folder = timm_folder(tmp_path / "ckpt", "cifar_wrn_40_1", num_classes=3, names=names)
    for label_names in (None, names):
        kept = create_student(f"local-dir:{folder}", num_classes=3, label_names=label_names, pretrained=True)
        for key, tensor in source.state_dict().items():
            assert torch.equal(unwrap_timm(kept).state_dict()[key], tensor), key
        assert kept.config.id2label == dict(enumerate(names))  # inherited when not given
    swapped = create_student(f"local-dir:{folder}", num_classes=3, label_names=["dog", "cat", "owl"], pretrained=True)
    assert_backbone_is(swapped, source)
    assert_new_classifier(swapped, source, 3)


def test_vit_at_another_img_size_resamples_position_embeddings(tmp_path):
    source, folder = timm_folder(tmp_path / "vit", "test_vit", img_size=32)  # 2x2 patches of 16
    student = create_student(f"local-dir:{folder}", num_classes=5, pretrained=True, img_size=48)  # 3x3
    bare = unwrap_timm(student)
    assert_backbone_is(student, source, skip=("pos_embed",))
    assert_new_classifier(student, source, 5)
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=(3, 3), num_prefix_tokens=1)
    assert bare.pos_embed.shape == (1, 10, source.pos_embed.shape[-1])
    torch.testing.assert_close(bare.pos_embed.detach(), expected)
    # the student takes 48x48 inputs, and says so to timm, to the config it saves, and to transformers
    assert timm.data.resolve_data_config(model=bare)["input_size"] == (3, 48, 48)
    assert student.config.model_args["img_size"] == 48
    assert student(pixel_values=torch.randn(1, 3, 48, 48)).logits.shape == (1, 5)
    student.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["pretrained_cfg"]["input_size"] == [3, 48, 48]
    assert saved["base_model_source"] == f"local-dir:{folder.resolve()}"
    processor = AutoImageProcessor.from_pretrained(tmp_path / "saved")
    assert processor.data_config["input_size"] == (3, 48, 48)


def test_fresh_vit_at_another_img_size_reports_it():
    student = create_student("vit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8)
    assert timm.data.resolve_data_config(model=unwrap_timm(student))["input_size"] == (3, 32, 32)
    assert student.config.pretrained_cfg["input_size"] == (3, 32, 32)


def test_a_checkpoint_saved_at_another_img_size_reports_the_size_it_takes(tmp_path):
    """save_for_hf keeps the registered 160-px input_size in pretrained_cfg even for a ViT built at 32 px (its
    model_args say so): the student must report 32 px, or its transforms and the teacher's conversion would
    prepare 160-px images for it."""
    vit = timm.create_model("test_vit", img_size=32, patch_size=8, num_classes=3)
    assert vit.pretrained_cfg["input_size"] == (3, 160, 160)
    save_for_hf(vit, tmp_path / "vit", safe_serialization=True, model_args={"img_size": 32, "patch_size": 8})
    student = create_student(f"local-dir:{tmp_path / 'vit'}", num_classes=4, pretrained=True)
    assert timm.data.resolve_data_config(model=unwrap_timm(student))["input_size"] == (3, 32, 32)
    assert student(pixel_values=torch.zeros(1, 3, 32, 32)).logits.shape == (1, 4)


def test_transformers_wrapper_folder_round_trip(tmp_path):
    """A student saved with save_pretrained (a Trainer checkpoint's layout) starts another one."""
    first = create_student("cifar_wrn_40_1", num_classes=4, label_names=NAMES[:4])
    with torch.no_grad():
        for tensor in first.parameters():
            tensor.uniform_(-0.5, 0.5)
    first.save_pretrained(tmp_path / "checkpoint-5")
    folder = tmp_path / "checkpoint-5"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "timm_wrapper"
    again = create_student(f"local-dir:{folder}", num_classes=4, pretrained=True)
    for key, tensor in unwrap_timm(first).state_dict().items():
        assert torch.equal(unwrap_timm(again).state_dict()[key], tensor), key
    assert again.config.id2label == dict(enumerate(NAMES[:4]))
    wider = create_student(f"local-dir:{folder}", num_classes=5, label_names=NAMES, pretrained=True)
    assert_backbone_is(wider, unwrap_timm(first))
    assert_new_classifier(wider, unwrap_timm(first), 5)


def upload(hub, folder: Path, repo_id: str) -> str:
    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo(repo_id)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    return hub.repos[repo_id].head


def test_hf_hub_start_from_the_fake_hub(fake_hub, tmp_path):
    source, folder = timm_folder(tmp_path / "ckpt", "cifar_resnet8x4")
    head = upload(fake_hub, folder, "alice/ckpt")
    for spec in ("hf-hub:alice/ckpt", f"hf-hub:alice/ckpt@{head}"):
        student = create_student(spec, num_classes=5, label_names=NAMES, pretrained=True)
        assert_backbone_is(student, source)
        assert_new_classifier(student, source, 5)
        config = student.config
        # at the commit the revision (default main) points at: a repo pushed again is another start
        assert (config.base_model, config.base_model_revision) == ("alice/ckpt", head)
        assert config.base_model_source == f"hf-hub:alice/ckpt@{head}"
        assert config.id2label == dict(enumerate(NAMES)) and config.pretrained_cfg["input_size"] == (3, 32, 32)
    downloads = [path for method, path, _ in fake_hub.requests if method == "GET" and "/resolve/" in path]
    assert any(path.endswith("/model.safetensors") for path in downloads)  # really from the fake Hub
    fresh = create_student("hf-hub:alice/ckpt", num_classes=5)  # the architecture from the Hub, fresh weights
    assert fresh.config.architecture == "cifar_resnet8x4" and fresh.config.base_model is None
    assert not torch.equal(unwrap_timm(fresh).stem[0].weight, source.stem[0].weight)


def test_a_hub_model_in_transformers_layout_is_a_teacher(fake_hub, tmp_path):
    """A TimmWrapper repo (save_pretrained, a Trainer checkpoint pushed) as a teacher was a KeyError: timm cannot
    read its config.json. It loads at the commit its revision points at."""
    source = trained_like("cifar_wrn_40_1", 5)
    wrapped = create_student("cifar_wrn_40_1", num_classes=5, label_names=NAMES)
    unwrap_timm(wrapped).load_state_dict(source.state_dict())
    wrapped.save_pretrained(tmp_path / "wrapped")
    head = upload(fake_hub, tmp_path / "wrapped", "alice/wrapped")
    teacher = load_teacher("hf-hub:alice/wrapped")
    assert_backbone_is(teacher, source, skip=classifier_keys(source))
    assert all(torch.equal(teacher.state_dict()[k], source.state_dict()[k]) for k in classifier_keys(source))
    assert teacher.pretrained_cfg["label_names"] == NAMES and pin_hub_source("hf-hub:alice/wrapped") == (
        f"hf-hub:alice/wrapped@{head}")
    (tmp_path / "wrapped" / "model.safetensors").unlink()
    upload(fake_hub, tmp_path / "wrapped", "alice/config-only")
    with pytest.raises(ValueError, match=r"'hf-hub:alice/config-only': a transformers TimmWrapper model must hold"):
        load_teacher("hf-hub:alice/config-only")


def test_timm_name_with_a_pretrained_tag_loads_its_hub_weights(fake_hub, tmp_path):
    # timm's registry says test_resnet.r160_in1k lives in timm/test_resnet.r160_in1k: serve it from the fake Hub.
    assert timm.get_pretrained_cfg("test_resnet.r160_in1k").hf_hub_id == "timm/test_resnet.r160_in1k"
    source, folder = timm_folder(tmp_path / "ckpt", "test_resnet", num_classes=1000, names=None)
    upload(fake_hub, folder, "timm/test_resnet.r160_in1k")
    for spec in ("test_resnet.r160_in1k", "test_resnet"):  # the default tag is that one
        student = create_student(spec, num_classes=5, pretrained=True)
        assert_backbone_is(student, source)
        assert_new_classifier(student, source, 5)
        config = student.config
        assert (config.base_model, config.base_model_revision, config.base_model_source) == (
            "timm/test_resnet.r160_in1k",
            None,
            spec,
        )
        assert config.pretrained_cfg["input_size"] == (3, 160, 160) and config.pretrained_cfg["crop_pct"] == 0.95


def test_hub_repos_without_safetensors_or_that_do_not_exist(fake_hub, tmp_path):
    model = trained_like("cifar_wrn_40_1", 3)
    save_for_hf(model, tmp_path / "pickled", safe_serialization=False)
    assert not (tmp_path / "pickled" / "model.safetensors").exists()
    upload(fake_hub, tmp_path / "pickled", "alice/pickled")
    with pytest.raises(ValueError, match=r"'alice/pickled' holds no safetensors weights \(model\.safetensors not"):
        create_student("hf-hub:alice/pickled", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match=r"the Hub has no model repo 'alice/nothing'"):
        create_student("hf-hub:alice/nothing", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match=r"'alice/pickled' has no revision 'v9'"):
        create_student("hf-hub:alice/pickled@v9", num_classes=3, pretrained=True)
    upload(fake_hub, tmp_path / "pickled", "timm/test_vit.r160_in1k")  # a timm name's repo, pickled only
    with pytest.raises(ValueError, match=r"'timm/test_vit\.r160_in1k' holds no safetensors weights"):
        create_student("test_vit", num_classes=3, pretrained=True)


def test_folders_that_must_not_load(tmp_path):
    model = trained_like("cifar_wrn_40_1", 3)
    save_for_hf(model, tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(ValueError, match=r"pickled weights only \(pytorch_model\.bin\); a student starts only from"):
        create_student(f"local-dir:{tmp_path / 'pickled'}", num_classes=3, pretrained=True)
    # without pretrained only config.json is read: the architecture, fresh weights
    assert create_student(f"local-dir:{tmp_path / 'pickled'}", num_classes=3).config.architecture == "cifar_wrn_40_1"
    with pytest.raises(FileNotFoundError, match=r"source='local-dir:.*nowhere'.*does not exist"):
        create_student(f"local-dir:{tmp_path / 'nowhere'}", num_classes=3, pretrained=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json' does not exist"):
        create_student(f"local-dir:{tmp_path / 'empty'}", num_classes=3)
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors in"):
        create_student(f"local-dir:{tmp_path / 'empty'}", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match=r"names no 'architecture'"):
        create_student(f"local-dir:{tmp_path / 'empty'}", num_classes=3)


def test_sources_that_are_not_timm_names_or_specs():
    with pytest.raises(ValueError, match=r"'cifar_resnet8x5' is not a registered.*cifar_resnet8x4.*import ltkd_hf"):
        create_student("cifar_resnet8x5", num_classes=3)
    with pytest.raises(ValueError, match=r"'alice/ckpt' looks like a path.*'local-dir:alice/ckpt'.*'hf-hub:alice/"):
        create_student("alice/ckpt", num_classes=3)
    with pytest.raises(ValueError, match=r"source='hf-hub:not a repo' is not a valid Hub model spec"):
        create_student("hf-hub:not a repo", num_classes=3)
    with pytest.raises(ValueError, match=r"source='resnet18\.nope'.*Invalid pretrained tag.*resnet18\.a1_in1k"):
        create_student("resnet18.nope", num_classes=3)
    with pytest.raises(ValueError, match=r"'cifar_resnet8x4' with pretrained=True: its weights are not published"):
        create_student("cifar_resnet8x4", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match=r"model_kwargs\['act_layer'\]=.*not JSON-serializable"):
        create_student("test_vit", num_classes=3, act_layer=torch.nn.GELU)
