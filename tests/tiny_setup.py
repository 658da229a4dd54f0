"""Tiny students, teachers and in-memory data shared by the trainer tests and their worker script."""

from __future__ import annotations

import torch
import timm

from ltkd_hf import DistillationConfig, DistillationTrainer
from ltkd_hf.models import create_student

NUM_CLASSES = 6
CLASS_COUNTS = [40, 30, 20, 10, 5, 3]


class SyntheticImages(torch.utils.data.Dataset):
    """Random 32x32 images with labels 0..C-1, fixed by a seed."""

    def __init__(self, n: int, seed: int = 0, num_classes: int = NUM_CLASSES):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.labels = torch.arange(n) % num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def make_student(seed: int = 0, arch: str = "test_convnext"):
    """A student without BatchNorm (LayerNorm ConvNeXt): batch composition cannot change its outputs."""
    torch.manual_seed(seed)
    return create_student(arch, num_classes=NUM_CLASSES, label_names=[f"c{i}" for i in range(NUM_CLASSES)])


def make_teacher(seed: int = 1):
    """A teacher with BatchNorm, so drifting running statistics would show, and confident (logits of a few
    units, not ~0.01 as at initialisation) so that its KL terms are well above float32 rounding."""
    torch.manual_seed(seed)
    teacher = timm.create_model("test_resnet", num_classes=NUM_CLASSES)
    with torch.no_grad():
        teacher.get_classifier().weight.mul_(10.0)
    return teacher


def make_config(output_dir, **overrides) -> DistillationConfig:
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return DistillationConfig(**values)


def make_trainer(config: DistillationConfig, **parts) -> DistillationTrainer:
    """A DistillationTrainer on the tiny setup (a fresh student and teacher, 8 images, CLASS_COUNTS); keyword
    arguments replace any of these or add other Trainer arguments."""
    if "model" not in parts:
        parts["model"] = make_student()
    if "teacher_model" not in parts:
        parts["teacher_model"] = make_teacher()
    parts.setdefault("train_dataset", SyntheticImages(8))
    parts.setdefault("class_counts", CLASS_COUNTS)
    return DistillationTrainer(args=config, **parts)
