"""Class-balanced KD: the teacher's distribution re-weighted towards rare classes before distilling."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_logits, check_positive
from ._numerics import compute_dtype
from .registry import DistillationLoss, register_loss

__all__ = ["BKDLoss", "bkd_loss", "effective_number_weights"]


def effective_number_weights(class_counts: Sequence[int] | torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Cui et al. (CVPR 2019) class weights ``w_c = (1 - beta) / (1 - beta^n_c)``, normalised to sum to C.

    Returns a float64 tensor of length C.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    if counts.dim() != 1 or counts.numel() == 0 or not torch.isfinite(counts).all() or (counts < 1).any():
        raise ValueError(
            f"class_counts must be a non-empty 1-D sequence of per-class training counts >= 1, got "
            f"{counts.tolist()[:10]}{'...' if counts.numel() > 10 else ''}; a class with no training image "
            "cannot be weighted by its effective number."
        )
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta < 1:
        raise ValueError(f"effective_number_beta must be a number in [0, 1), got {beta!r} (the paper uses 0.9999).")
    # 1 - beta^n computed as -expm1(n log beta): exact for beta close to 1, where 1 - beta^n cancels.
    weights = (1 - beta) / -torch.expm1(counts * torch.log(torch.tensor(beta, dtype=torch.float64)))
    return weights * (counts.numel() / weights.sum())


def bkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    class_counts: Sequence[int] | torch.Tensor,
    *,
    temperature: float = 2.0,
    effective_number_beta: float = 0.9999,
) -> dict[str, torch.Tensor]:
    """Class-balanced KD: ``loss = T^2 * KL(p̃_t || p_s)``, summed over classes, batch mean, where
    ``p̃_t,c = w_c p_t,c / sum_j w_j p_t,j`` re-weights the teacher's ``p_t = softmax(z_t / T)`` by the
    effective-number weights ``w`` of ``class_counts`` (``effective_number_weights``) and renormalises
    per sample; ``p_s = softmax(z_s / T)``.

    In log space ``log p̃_t = log_softmax(z_t / T + log w)``. Returns ``{"loss", "kl"}`` (``kl`` without
    ``T^2``); no gradient flows into ``teacher_logits``.
    """
    check_logits(student_logits, teacher_logits)
    temperature = check_positive("temperature", temperature)
    weights = effective_number_weights(class_counts, effective_number_beta)
    if weights.numel() != student_logits.shape[1]:
        raise ValueError(
            f"class_counts has {weights.numel()} entries but the logits have {student_logits.shape[1]} classes; "
            "pass one training count per class, in class-index order."
        )
    return balanced_kd_terms(student_logits, teacher_logits, weights.log(), temperature)


def balanced_kd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, log_weights: torch.Tensor, temperature: float
) -> dict[str, torch.Tensor]:
    """``bkd_loss`` for precomputed log class weights (no validation, no host-device copy per call)."""
    dtype = compute_dtype(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)
    log_weights = log_weights.to(device=student_logits.device, dtype=dtype)
    log_target = F.log_softmax(teacher_logits.detach().to(dtype) / temperature + log_weights, dim=1)
    kl = F.kl_div(log_p_s, log_target, reduction="batchmean", log_target=True)
    return {"loss": temperature**2 * kl, "kl": kl}


@register_loss("bkd")
class BKDLoss(DistillationLoss):
    """``bkd_loss`` as a loss object; the class weights are computed once, from ``class_counts``."""

    def __init__(
        self,
        *,
        class_counts: Sequence[int] | torch.Tensor | None = None,
        temperature: float = 2.0,
        effective_number_beta: float = 0.9999,
    ) -> None:
        super().__init__()
        if class_counts is None:
            raise ValueError(
                "BKD needs the per-class training counts: pass class_counts=[n_0, ..., n_{C-1}] "
                "(create_loss('bkd', class_counts=...))."
            )
        self.temperature = check_positive("temperature", temperature)
        self.effective_number_beta = effective_number_beta
        log_weights = effective_number_weights(class_counts, effective_number_beta).log()
        # float32 on the model's device for float32 math; the float64 copy stays on the host (not every
        # accelerator has float64) for float64 inputs, whose math runs in float64 (compute_dtype).
        self.register_buffer("log_weights", log_weights.float(), persistent=False)
        self._log_weights_float64 = log_weights

    def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None):
        check_logits(student_logits, teacher_logits)
        if student_logits.shape[1] != self.log_weights.numel():
            raise ValueError(
                f"the logits have {student_logits.shape[1]} classes but BKD was built from "
                f"{self.log_weights.numel()} class counts; build it from the counts of the same classes."
            )
        wide = compute_dtype(student_logits, teacher_logits) == torch.float64
        log_weights = self._log_weights_float64 if wide else self.log_weights
        return balanced_kd_terms(student_logits, teacher_logits, log_weights, self.temperature)

    def describe(self) -> str:
        return (
            f"BKD: T^2*KL(class-balanced p_t||p_s), effective-number beta={self.effective_number_beta}, "
            f"T={self.temperature}, C={self.log_weights.numel()}"
        )
