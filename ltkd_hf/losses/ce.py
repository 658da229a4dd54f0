"""The no-distillation baseline: the student trains on cross-entropy alone."""

from __future__ import annotations

import torch

from .registry import DistillationLoss, register_loss

__all__ = ["NoDistillation"]


@register_loss("ce")
class NoDistillation(DistillationLoss):
    """Contributes nothing: ``{"loss": 0}``, so the trainer's CE term is the whole objective."""

    def __init__(self) -> None:
        super().__init__()

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        student_features: object = None,
        teacher_features: object = None,
    ) -> dict[str, torch.Tensor]:
        return {"loss": student_logits.new_zeros((), dtype=torch.float32)}

    def describe(self) -> str:
        return "CE only: no distillation term"
