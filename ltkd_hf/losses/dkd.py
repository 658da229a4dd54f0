"""Decoupled KD (Zhao et al., CVPR 2022), in mdistiller's formulation, computed in log space."""

from __future__ import annotations

import torch

from ._checks import check_logits, check_nonnegative, check_positive
from ._numerics import compute_dtype
from .registry import DistillationLoss, register_loss

__all__ = ["DKDLoss", "dkd_loss"]


def _check_labels(labels: torch.Tensor, batch: int, num_classes: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or labels.shape != (batch,):
        desc = f"{labels.dtype} tensor of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else labels
        raise ValueError(f"labels must be a LongTensor of shape ({batch},) holding class ids, got {desc}.")
    if num_classes < 2:
        raise ValueError(f"dkd_loss needs at least 2 classes (a target and a non-target), got {num_classes}.")


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> dict[str, torch.Tensor]:
    """DKD: ``loss = alpha * tckd + beta * nckd``, each term ``T^2 *`` a batch-mean KL.

    * ``tckd`` (target class): KL between the binary distributions ``[p_y, 1 - p_y]`` of teacher and
      student;
    * ``nckd`` (non-target classes): KL between the distributions over the non-target classes only
      (softmax with the target class removed).

    Unlike mdistiller (``log`` of a probability, target masked by ``-1000``) both terms come from
    log-sum-exps and the target is masked exactly, so they stay finite for any logits.
    Returns ``{"loss", "tckd", "nckd"}``; no gradient flows into ``teacher_logits``.
    """
    check_logits(student_logits, teacher_logits)
    _check_labels(labels, *student_logits.shape)
    alpha = check_nonnegative("alpha", alpha)
    beta = check_nonnegative("beta", beta)
    temperature = check_positive("temperature", temperature)
    dtype = compute_dtype(student_logits, teacher_logits)
    labels = labels.to(student_logits.device)
    target = torch.nn.functional.one_hot(labels, student_logits.shape[1]).bool()

    terms = []
    for logits in (student_logits, teacher_logits.detach()):
        x = logits.to(dtype) / temperature
        lse = x.logsumexp(1)
        non_target = x.masked_fill(target, float("-inf"))
        lse_non_target = non_target.logsumexp(1)
        binary = torch.stack((x.gather(1, labels[:, None]).squeeze(1), lse_non_target), 1) - lse[:, None]
        terms.append((binary, non_target - lse_non_target[:, None]))
    (bin_s, nt_s), (bin_t, nt_t) = terms

    tckd = (bin_t.exp() * (bin_t - bin_s)).sum(1).mean()
    # The target column holds -inf - -inf; it carries no teacher mass, so it contributes 0.
    nckd = torch.where(target, 0.0, nt_t.exp() * (nt_t - nt_s)).sum(1).mean()
    tckd, nckd = temperature**2 * tckd, temperature**2 * nckd
    return {"loss": alpha * tckd + beta * nckd, "tckd": tckd, "nckd": nckd}


@register_loss("dkd")
class DKDLoss(DistillationLoss):
    """``dkd_loss`` as a loss object (needs the labels)."""

    requires_labels = True

    def __init__(self, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha = check_nonnegative("alpha", alpha)
        self.beta = check_nonnegative("beta", beta)
        self.temperature = check_positive("temperature", temperature)

    def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None):
        return dkd_loss(
            student_logits, teacher_logits, self._require_labels(labels),
            alpha=self.alpha, beta=self.beta, temperature=self.temperature,
        )

    def describe(self) -> str:
        return (
            f"DKD: {self.alpha}*T^2*KL(target/non-target) + {self.beta}*T^2*KL(non-target classes), "
            f"T={self.temperature}"
        )
