"""Teacher loading (safe weights, frozen, eval), the teacher/dataset check, student creation."""

import fractions
import json
import math

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_for_hf

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf.models import check_teacher_matches, create_student, load_teacher, unwrap_timm

ARCH = "cifar_wrn_40_1"  # the smallest zoo model: fast to build


def trained_like(num_classes=10):
    """A model whose weights and BatchNorm statistics differ from any fresh initialisation."""
    torch.manual_seed(1)
    model = timm.create_model(ARCH, num_classes=num_classes)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5) if key.endswith("running_var") else tensor.uniform_(-0.5, 0.5)
    return model


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_frozen_eval(model):
    assert all(not p.requires_grad for p in model.parameters())
    assert all(not m.training for m in model.modules())


def test_name_plus_safetensors_checkpoint(tmp_path):
    source = trained_like(num_classes=10)
    path = tmp_path / "teacher.safetensors"
    save_file(source.state_dict(), path)
    teacher = load_teacher(ARCH, checkpoint=str(path))  # 10 classes read from the checkpoint
    assert teacher.num_classes == 10
    assert_same_weights(teacher, source)
    assert_frozen_eval(teacher)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(teacher(x), source.eval()(x))


def test_checkpoint_for_another_architecture_is_explained(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_file(trained_like().state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit architecture 'cifar_resnet8x4'.*missing keys"):
        load_teacher("cifar_resnet8x4", checkpoint=str(path))
    with pytest.raises(ValueError, match=r"head\.fc\.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        load_teacher(ARCH, checkpoint=str(path), num_classes=100)


@pytest.mark.parametrize("spelling", ["local-dir:{}", "{}"])
def test_folder_written_by_timm(tmp_path, spelling):
    source = trained_like(num_classes=3)
    save_for_hf(source, tmp_path, model_config={"label_names": ["cat", "dog", "owl"]}, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    teacher = load_teacher(spelling.format(tmp_path))
    assert type(teacher) is type(source) and teacher.num_classes == 3
    assert_same_weights(teacher, source)
    assert_frozen_eval(teacher)
    check_teacher_matches(teacher, num_classes=3, label_names=["cat", "dog", "owl"])
    swapped = r"class 0: teacher 'cat' vs dataset 'dog'; class 1: teacher 'dog' vs dataset 'cat'"
    with pytest.raises(ValueError, match=swapped):
        check_teacher_matches(teacher, num_classes=3, label_names=["dog", "cat", "owl"])
    with pytest.raises(ValueError, match=r"has 3 classes; a teacher's classifier cannot be resized"):
        load_teacher(spelling.format(tmp_path), num_classes=5)


def test_folder_and_checkpoint_written_by_transformers(tmp_path):
    names = ["cat", "dog", "owl"]
    student = create_student(ARCH, num_classes=3, label_names=names)
    with torch.no_grad():
        for tensor in student.parameters():
            tensor.uniform_(-0.5, 0.5)
    student.save_pretrained(tmp_path)  # keys "timm_model.*", config.json with model_type timm_wrapper
    teacher = load_teacher(str(tmp_path))
    assert_same_weights(teacher, unwrap_timm(student))
    assert_frozen_eval(teacher)
    check_teacher_matches(teacher, num_classes=3, label_names=names)
    with pytest.raises(ValueError, match=r"class 2: teacher 'owl' vs dataset 'emu'"):
        check_teacher_matches(teacher, num_classes=3, label_names=["cat", "dog", "emu"])
    same = load_teacher(ARCH, checkpoint=str(tmp_path / "model.safetensors"))
    assert_same_weights(same, unwrap_timm(student))


def test_pickled_checkpoints_need_the_flag(tmp_path):
    source = trained_like()
    path = tmp_path / "teacher.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(ValueError, match=r"'.*teacher\.pth' is a pickle.*allow_unsafe_pickle=True"):
        load_teacher(ARCH, checkpoint=str(path))
    teacher = load_teacher(ARCH, checkpoint=str(path), allow_unsafe_pickle=True)
    assert_same_weights(teacher, source)
    assert_frozen_eval(teacher)


def test_pickle_with_python_objects_falls_back_only_with_the_flag(tmp_path):
    source = trained_like()
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"model": source.state_dict(), "best_acc": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="allow_unsafe_pickle"):
        load_teacher(ARCH, checkpoint=str(path))
    with pytest.warns(UserWarning, match="weights_only=False"):
        teacher = load_teacher(ARCH, checkpoint=str(path), allow_unsafe_pickle=True)
    assert_same_weights(teacher, source)


def test_folder_with_only_pickled_weights(tmp_path):
    source = trained_like(num_classes=3)
    save_for_hf(source, tmp_path, safe_serialization=False)
    assert not (tmp_path / "model.safetensors").exists()
    with pytest.raises(ValueError, match=r"pickled weights only \(pytorch_model\.bin\).*allow_unsafe_pickle=True"):
        load_teacher(str(tmp_path))
    assert_same_weights(load_teacher(str(tmp_path), allow_unsafe_pickle=True), source)


def test_missing_paths_and_unknown_names(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_teacher(str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_teacher(f"local-dir:{missing}")
    with pytest.raises(FileNotFoundError, match=r"checkpoint=.*nowhere\.safetensors"):
        load_teacher(ARCH, checkpoint=str(tmp_path / "nowhere.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_teacher(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"'cifar_resnet8x5' is not a registered.*cifar_resnet8x4.*import ltkd_hf"):
        load_teacher("cifar_resnet8x5", checkpoint="unused.safetensors")
    with pytest.raises(ValueError, match=r"'cifar_resnet8x4' has no published weights: pass checkpoint=.*--teacher_checkpoint FILE"):
        load_teacher("cifar_resnet8x4")
    weights = tmp_path / "w.safetensors"
    save_file(trained_like().state_dict(), weights)
    with pytest.raises(ValueError, match=r"is a file: pass the architecture name as source"):
        load_teacher(str(weights))


def test_class_count_mismatch_is_explained():
    teacher = trained_like(num_classes=10)
    with pytest.raises(ValueError, match=r"teacher predicts 10 classes but the dataset has num_classes=100"):
        check_teacher_matches(teacher, num_classes=100, label_names=None)
    check_teacher_matches(teacher, num_classes=10, label_names=[str(i) for i in range(10)])  # no names: count only


def ce_by_hand(logits, labels):
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        top = max(row)
        total += top + math.log(sum(math.exp(v - top) for v in row)) - row[label]
    return total / len(labels)


@pytest.mark.parametrize("architecture", ["cifar_resnet8x4", "test_resnet"])
def test_student_forward_with_labels(architecture):
    names = ["apple", "bee", "cloud", "dune"]
    student = create_student(architecture, num_classes=4, label_names=names)
    assert student.config.num_labels == 4
    assert student.config.id2label == dict(enumerate(names))
    assert student.config.label2id == {n: i for i, n in enumerate(names)}
    pixels, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    out = student(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (3, 4)
    # float32 CE of O(1) logits against a float64 loop: a few eps (1.2e-7) apart, hence the 1e-6 floor
    assert out.loss.item() == pytest.approx(ce_by_hand(out.logits, labels), rel=1e-5, abs=1e-6)
    out.loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    bare = unwrap_timm(student)
    assert bare is student.timm_model and bare.num_classes == 4
    student.eval()
    torch.testing.assert_close(student(pixel_values=pixels).logits, bare(pixels))
    # A wrapper teacher carries its label names in config.id2label.
    check_teacher_matches(student, num_classes=4, label_names=names)
    with pytest.raises(ValueError, match=r"class 3: teacher 'dune' vs dataset 'dusk'"):
        check_teacher_matches(student, num_classes=4, label_names=["apple", "bee", "cloud", "dusk"])


def test_student_keeps_the_architectures_own_initialisation():
    student = create_student("cifar_resnet8x4", num_classes=100)
    stem = unwrap_timm(student).stem[0].weight  # Kaiming fan-out: std sqrt(2 / (32 * 3 * 3))
    assert stem.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.15)
    assert student.config.id2label[99] == "LABEL_99"
    # transformers' placeholder names are not class names: only the class count is checked.
    check_teacher_matches(student, num_classes=100, label_names=[f"class {i}" for i in range(100)])


def test_student_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"source='cifar_resnet8x3'.*import ltkd_hf.*'local-dir:' prefix"):
        create_student("cifar_resnet8x3", num_classes=10)
    with pytest.raises(ValueError, match=r"label_names has 2 names but num_classes=3"):
        create_student("cifar_resnet8x4", num_classes=3, label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"label_names has duplicates"):
        create_student("cifar_resnet8x4", num_classes=2, label_names=["a", "a"])
    with pytest.raises(ValueError, match=r"num_classes=0: a classifier needs at least 1 class"):
        create_student("cifar_resnet8x4", num_classes=0)
    # pretrained=True starts from published weights (tests/test_models_pretrained.py); the CIFAR zoo has none
    with pytest.raises(ValueError, match=r"'cifar_resnet8x4' with pretrained=True: its weights are not published"):
        create_student("cifar_resnet8x4", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match=r"neither a timm model nor a TimmWrapper"):
        unwrap_timm(torch.nn.Linear(2, 2))


def test_teacher_from_a_wrapper_folder_takes_the_students_input_size(tmp_path):
    """A ViT student at img_size=32 saved with save_pretrained (a Trainer checkpoint) is a teacher that says it
    takes 32x32 inputs: from the saved pretrained_cfg, or, in a config without one, from model_args."""
    student = create_student("test_vit", num_classes=3, img_size=32, label_names=["a", "b", "c"])
    student.save_pretrained(tmp_path)
    teacher = load_teacher(str(tmp_path))
    assert timm.data.resolve_data_config(model=teacher)["input_size"] == (3, 32, 32)
    assert_same_weights(teacher, unwrap_timm(student))
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    del config["pretrained_cfg"]
    config_path.write_text(json.dumps(config))
    assert timm.data.resolve_data_config(model=load_teacher(str(tmp_path)))["input_size"] == (3, 32, 32)


def test_a_checkpoint_of_a_run_at_another_input_size_loads_as_teacher_and_as_start(tmp_path):
    """--input_size reaches create_student as pretrained_cfg_overlay, which the TimmWrapper config records among
    its model_args: a Trainer checkpoint of such a run (the demo's, at 16 px) was a TypeError ("multiple values for
    pretrained_cfg_overlay") as a teacher, and as a start with --input_size given again."""
    small = {"pretrained_cfg_overlay": {"input_size": (3, 16, 16)}}
    student = create_student(ARCH, num_classes=3, **small)
    with torch.no_grad():
        for tensor in student.parameters():
            tensor.uniform_(-0.5, 0.5)
    student.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_args"] == {
        "pretrained_cfg_overlay": {"input_size": [3, 16, 16]}}
    teacher = load_teacher(str(tmp_path))
    assert_same_weights(teacher, unwrap_timm(student))
    assert timm.data.resolve_data_config(model=teacher)["input_size"] == (3, 16, 16)
    for kwargs, size in (({}, (3, 16, 16)), (small, (3, 16, 16)),
                         ({"pretrained_cfg_overlay": {"input_size": (3, 24, 24)}}, (3, 24, 24))):
        again = create_student(f"local-dir:{tmp_path}", num_classes=3, pretrained=True, **kwargs)
        assert_same_weights(unwrap_timm(again), unwrap_timm(student))
        assert timm.data.resolve_data_config(model=unwrap_timm(again))["input_size"] == size


def test_a_transformers_native_model_is_refused_by_name(tmp_path):
    """A transformers ViT saved with save_pretrained has no timm 'architecture': as a teacher it was a KeyError."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, image_size=16,
                       patch_size=8, num_labels=3)
    ViTForImageClassification(config).save_pretrained(tmp_path)
    match = r"names a transformers 'vit' model, not a timm one; ltkd_hf's models are timm models"
    with pytest.raises(ValueError, match=match):
        load_teacher(str(tmp_path))
    with pytest.raises(ValueError, match=match):
        create_student(f"local-dir:{tmp_path}", num_classes=3, pretrained=True)


def test_an_offline_hub_source_names_itself_and_the_way_out():
    """huggingface_hub's offline miss says only "An error happened while trying to locate the file on the Hub":
    neither the repo, nor the file, nor what to do. The tests run with HF_HUB_OFFLINE=1 and an empty Hub cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    for load in (load_teacher, lambda source: create_student(source, num_classes=3)):
        with pytest.raises(LocalEntryNotFoundError, match=r"source='hf-hub:nobody/absent' cannot be read: the "
                                                          r"Hub is unreachable .* no config.json of 'nobody/absent'"):
            load("hf-hub:nobody/absent")
