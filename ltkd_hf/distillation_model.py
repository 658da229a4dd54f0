"""`DistillationModel`: the student and the distillation loss as one module, the model `DistillationTrainer` trains.

Trainer trains, wraps (DDP, FSDP, DeepSpeed), clips and checkpoints its model's parameters. Holding the loss's
trainable modules (ReviewKD's fusion modules) next to the student, and running the loss inside ``forward``, puts
them under that same machinery: one optimizer with the student's weight-decay rule, gradients synchronised by the
engine's own wrapper (the whole graph runs through its forward), one gradient norm, one state dict.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping

import torch
from torch import nn

from .losses import DistillationLoss, capture_features
from .models.loading import unwrap_timm

__all__ = ["DistillationModel"]


class DistillationModel(nn.Module):
    """The student (``student``) and the loss (``distill_loss``, with any trainable modules of its own).

    ``forward(pixel_values)`` is the student's forward and returns its logits. Given the teacher's logits (and, for a
    feature loss, the teacher's features) it also evaluates the loss on that forward, recording the student's
    features while it runs, and returns the loss's terms with the logits.

    Its state dict holds ``student.*`` and ``distill_loss.*``; `student_state` and `loss_state` split such a state
    into the student's timm tensors (the canonical folder's names) and the loss's, and `join_state` puts them back.
    """

    def __init__(self, student: nn.Module, distill_loss: DistillationLoss) -> None:
        super().__init__()
        self.student = student
        self.distill_loss = distill_loss
        bare = unwrap_timm(student)
        # Where the bare timm model sits in this module's state: "student." or "student.timm_model.".
        self._timm_prefix = next(name for name, module in self.named_modules() if module is bare) + "."

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        teacher_logits: torch.Tensor | None = None,
        teacher_features: Mapping[str, Any] | None = None,
        batch_statistics: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """``(student logits, None)``, or with ``teacher_logits`` ``(student logits, the loss's terms)``; the terms
        hold ``"loss"`` and the loss's named components. ``batch_statistics`` are the window's (LTKD's group sums)."""
        if teacher_logits is None:
            return self._logits(self.student(pixel_values=pixel_values)), None
        capture = self.distill_loss.requires_features
        with capture_features(self.student, **self.distill_loss.student_capture) if capture else nullcontext() as seen:
            logits = self._logits(self.student(pixel_values=pixel_values))
        extra: dict[str, Any] = {}
        if capture:
            extra.update(student_features=seen, teacher_features=teacher_features)
        if batch_statistics is not None:
            extra["batch_statistics"] = batch_statistics
        return logits, self.distill_loss(logits, teacher_logits, labels, **extra)

    @property
    def config(self) -> Any:
        """The student's transformers config (Trainer reads ``model.config``); absent for a bare timm student."""
        return self.student.config

    @staticmethod
    def _logits(out: Any) -> torch.Tensor:
        return out.logits if hasattr(out, "logits") else out

    def student_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The student's tensors of ``state`` (this module's), under the bare timm model's names."""
        return {k[len(self._timm_prefix) :]: v for k, v in state.items() if k.startswith(self._timm_prefix)}

    @staticmethod
    def loss_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss's tensors of ``state`` (this module's), under the loss's own names."""
        prefix = "distill_loss."
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    def join_state(
        self, student: Mapping[str, torch.Tensor], loss: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """This module's state from the student's timm tensors and the loss's (the inverse of the two above)."""
        return {
            **{self._timm_prefix + k: v for k, v in student.items()},
            **{f"distill_loss.{k}": v for k, v in loss.items()},
        }
