"""Argument checks shared by the losses: cheap, and worded for the person who passed the value."""

from __future__ import annotations

import math

import torch


def check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Both logits are floating ``(batch, num_classes)`` tensors of the same shape (no device sync)."""
    for name, value in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"{name} must be a floating-point tensor of shape (batch, num_classes), got {shape}; "
                "pass the raw model outputs (logits), one row per sample."
            )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits has shape {tuple(student_logits.shape)} but teacher_logits has shape "
            f"{tuple(teacher_logits.shape)}; both models must score the same batch over the same classes."
        )
    if student_logits.shape[0] == 0:
        raise ValueError("student_logits holds an empty batch (0 rows); pass at least one sample.")


def check_positive(name: str, value: float) -> float:
    """A finite number > 0 (temperatures)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_flag(name: str, value: bool) -> bool:
    """True or False, nothing else: ``bool("false")`` is True, so a string would silently switch the option on."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def check_nonnegative(name: str, value: float) -> float:
    """A finite number >= 0 (loss weights)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (a loss weight), got {value!r}.")
    return float(value)


def check_class_to_group(
    class_to_group: torch.Tensor, num_classes: int, num_groups: int | None = None
) -> int:
    """Validate a class -> group map of length ``num_classes``; return the number of groups ``K``.

    Every id must lie in 0..K-1 and every group must hold at least one class. Reading the ids costs one
    device sync on an accelerator, so loss modules call this once, at construction.
    """
    if not isinstance(class_to_group, torch.Tensor) or class_to_group.dim() != 1 or class_to_group.dtype != torch.long:
        desc = (
            f"{class_to_group.dtype} tensor of shape {tuple(class_to_group.shape)}"
            if isinstance(class_to_group, torch.Tensor)
            else type(class_to_group).__name__
        )
        raise ValueError(
            f"class_to_group must be a 1-D LongTensor of group ids (ClassGroups.index()), got {desc}."
        )
    if class_to_group.numel() != num_classes:
        raise ValueError(
            f"class_to_group has {class_to_group.numel()} entries but the logits have {num_classes} classes; "
            "build the groups from the same class list as the models (one group id per class)."
        )
    ids = class_to_group.detach().cpu()
    low, high = int(ids.min()), int(ids.max())
    k = high + 1 if num_groups is None else int(num_groups)
    if low < 0 or high >= k:
        raise ValueError(
            f"class_to_group holds group ids in {low}..{high}, expected ids in 0..{k - 1}"
            f"{'' if num_groups is None else f' (num_groups={num_groups})'}."
        )
    sizes = torch.bincount(ids, minlength=k)
    empty = torch.nonzero(sizes == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"class_to_group leaves groups {empty[:10]} without any class; number the groups 0..K-1 "
            "with every group holding at least one class."
        )
    return k
