"""Hinton et al. (2015) knowledge distillation: KL between temperature-softened distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_logits, check_positive
from ._numerics import compute_dtype
from .registry import DistillationLoss, register_loss

__all__ = ["KDLoss", "kd_loss"]


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 4.0
) -> dict[str, torch.Tensor]:
    """Classic KD: ``loss = T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``, summed over classes, batch mean.

    Returns ``{"loss", "kl"}`` (``kl`` without the ``T^2``), float32 0-dim tensors whatever the logits'
    dtype. No gradient flows into ``teacher_logits``.
    """
    check_logits(student_logits, teacher_logits)
    temperature = check_positive("temperature", temperature)
    dtype = compute_dtype(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return {"loss": temperature**2 * kl, "kl": kl}


@register_loss("kd")
class KDLoss(DistillationLoss):
    """``kd_loss`` as a loss object."""

    def __init__(self, *, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)

    def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None):
        return kd_loss(student_logits, teacher_logits, temperature=self.temperature)

    def describe(self) -> str:
        return f"KD: T^2*KL(p_t||p_s), T={self.temperature}"
