"""The no-distillation baseline (cross-entropy alone), and the logit-adjusted cross-entropy of a balanced teacher."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ._numerics import compute_dtype
from .registry import DistillationLoss, register_loss

__all__ = ["NoDistillation", "log_class_prior", "logit_adjusted_cross_entropy"]


def log_class_prior(class_counts: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``log(n_c / sum n)``, the training split's log class frequencies, ``(C,)`` in ``dtype`` (computed in
    float64; pass ``torch.float64`` to pair it with float64 logits)."""
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or bool((counts <= 0).any()):
        raise ValueError(f"class_counts must be positive training counts per class, got {counts.tolist()[:10]}.")
    return (counts / counts.sum()).log().to(dtype)


def logit_adjusted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """``CE(z + tau * log pi, y)``, mean over the batch, in float32 (float64 for float64 ``logits``) (Menon et al.,
    "Long-tail learning via logit adjustment", ICLR 2021). ``tau = 1`` is the balanced softmax of Ren et al.
    (NeurIPS 2020); the model's own logits ``z`` then estimate the balanced posterior, so predictions use ``z``
    unadjusted."""
    dtype = compute_dtype(logits)
    return F.cross_entropy(logits.to(dtype) + tau * log_prior.to(logits.device, dtype), labels)


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
