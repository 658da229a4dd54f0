"""Starting from checkpoints: a ViT student distilled from a CNN teacher with other inputs, and run_distill.py
with --teacher_init / --student_init on an image folder, from checkpoints the test writes (never downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from timm.models import save_for_hf

from ltkd_hf.models import create_student, unwrap_timm

from test_hub_save import assert_three_loaders_agree
from tiny_setup import NUM_CLASSES, SyntheticImages, make_config, make_trainer

from ltkd_hf.cli import distill as run_distill

REPO = Path(__file__).resolve().parents[1]


def test_vit_student_feeds_a_cnn_teacher_its_own_inputs(tmp_path):
    """vit_tiny at 32 px (mean/std 0.5) distils from a CIFAR CNN that takes 48 px with CIFAR statistics: the
    teacher receives the student's batch de-normalised, resized to 48 px and normalised its way."""
    checkpoint = tmp_path / "vit"
    torch.manual_seed(0)
    save_for_hf(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=3), str(checkpoint),
                model_args={"img_size": 32, "patch_size": 8}, safe_serialization=True)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    student = create_student(f"local-dir:{checkpoint}", num_classes=NUM_CLASSES, label_names=names, pretrained=True)
    teacher = timm.create_model("cifar_resnet8x4", num_classes=NUM_CLASSES, pretrained_cfg_overlay={"input_size": (3, 48, 48)})
    seen = []
    teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    data = SyntheticImages(8)
    trainer = make_trainer(make_config(tmp_path / "out", max_steps=1, learning_rate=0.0), model=student,
                           teacher_model=teacher, train_dataset=data)
    trainer.train()
    student_cfg = timm.data.resolve_data_config(model=unwrap_timm(student))
    assert student_cfg["input_size"] == (3, 32, 32) and tuple(student_cfg["mean"]) == (0.5, 0.5, 0.5)
    mean_s, std_s = (torch.tensor(student_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    teacher_cfg = unwrap_timm(teacher).pretrained_cfg
    mean_t, std_t = (torch.tensor(teacher_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    raw = F.interpolate(data.images * std_s + mean_s, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    expected = (raw - mean_t) / std_t
    (received,) = seen
    assert received.shape == (8, 3, 48, 48)
    order = [int(torch.cdist(r.flatten()[None], expected.flatten(1)).argmin()) for r in received]
    assert sorted(order) == list(range(8))  # the loader shuffles: each input is one image of the batch
    torch.testing.assert_close(received, expected[order], rtol=1e-5, atol=1e-5)


def write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, counts in (("train", {"heron": 8, "kingfisher": 5, "osprey": 3}), ("test", dict.fromkeys(["heron", "kingfisher", "osprey"], 2))):
        for label, (name, n) in enumerate(counts.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (40, 28, 3)) + 80 * label  # non-square, each class its own brightness
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")


def test_finetune_recipe_starts_both_models_from_checkpoints(tmp_path):
    write_folder(tmp_path / "birds")
    torch.manual_seed(1)
    teacher_ckpt, student_ckpt = tmp_path / "teacher_ckpt", tmp_path / "student_ckpt"
    save_for_hf(timm.create_model("test_resnet", num_classes=7), str(teacher_ckpt), safe_serialization=True)
    save_for_hf(timm.create_model("test_vit", num_classes=7), str(student_ckpt), safe_serialization=True)
    out = tmp_path / "out"
    run_distill.main([
        "--config", str(REPO / "recipes" / "configs" / "finetune.yaml"), "--dataset", str(tmp_path / "birds"),
        "--teacher_init", f"local-dir:{teacher_ckpt}", "--student_init", f"local-dir:{student_ckpt}",
        "--output_dir", str(out), "--max_steps", "1", "--warmup_epochs", "0", "--learning_rate", "0", "--teacher_learning_rate", "0",
        "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0", "--eval_strategy", "no",
    ])
    # The teacher stage started from the checkpoint's backbone (lr 0 keeps its weights; BatchNorm statistics
    # move in any training forward), with a new 3-way head.
    checkpoint, teacher = load_file(teacher_ckpt / "model.safetensors"), load_file(out / "teacher" / "model.safetensors")
    fresh = timm.create_model("test_resnet", num_classes=3)
    head = fresh.pretrained_cfg["classifier"]
    backbone = [k for k, _ in fresh.named_parameters() if not k.startswith(head + ".")]
    assert backbone and all(torch.equal(teacher[k], checkpoint[k]) for k in backbone)
    assert teacher[f"{head}.weight"].shape[0] == 3
    # The student too, and its folder loads in timm, transformers and pipeline alike.
    student_dir = out / "student"
    student, start = load_file(student_dir / "model.safetensors"), load_file(student_ckpt / "model.safetensors")
    assert all(torch.equal(student[k], start[k]) for k in start if not k.startswith("head."))  # LayerNorm ViT
    model = timm.create_model(f"local-dir:{student_dir}", pretrained=True).eval()
    assert_three_loaders_agree(student_dir, model, labels=["heron", "kingfisher", "osprey"])
    # The card and the report say where each model started, by the checkpoints' folder names: what a push publishes
    # holds no path of this machine (they held both checkpoints' absolute paths). The recorded settings keep the path.
    card = ModelCard.load(student_dir / "README.md").text
    report = json.loads((student_dir / "report.json").read_text())["metadata"]
    assert "started from `local-dir:student_ckpt [files:" in card and report["model"]["init"].startswith("local-dir:student_ckpt [files:")
    assert "local-dir:teacher_ckpt fine-tuned here for 1 step at learning rate 0 with cross-entropy on this split" in card
    assert report["teacher"].startswith("teacher/ of this run (local-dir:teacher_ckpt fine-tuned here")
    assert str(tmp_path) not in card + (student_dir / "report.json").read_text() + (student_dir / "report.md").read_text()
    settings = json.loads((student_dir / "config.json").read_text())["ltkd"]["settings"]
    assert settings["model"]["init"].startswith(f"local-dir:{student_ckpt} [files:")  # a folder retrained: another
    assert f"local-dir:{teacher_ckpt} fine-tuned here" in settings["teacher"]
    assert settings["model"] | {"init": None} == {"architecture": "test_vit", "init": None, "input_size": [3, 160, 160]}
