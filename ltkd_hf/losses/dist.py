"""DIST (Huang et al., NeurIPS 2022): match inter- and intra-class Pearson relations of predictions."""

from __future__ import annotations

import torch

from ._checks import check_logits, check_nonnegative, check_positive
from ._numerics import compute_dtype
from .registry import DistillationLoss, register_loss

__all__ = ["DISTLoss", "dist_loss"]

_EPS = 1e-8  # the reference implementation's guard against a zero-variance row


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + _EPS)


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    tau: float = 1.0,
) -> dict[str, torch.Tensor]:
    """DIST: ``loss = beta * inter + gamma * intra`` on ``y = softmax(z / tau)``, each ``tau^2 *``:

    * ``inter``: ``1 - Pearson`` between student and teacher over the classes of each sample, batch mean;
    * ``intra``: ``1 - Pearson`` over the batch for each class, mean over classes (needs batch >= 2).

    The intra term relates the samples of one process's batch (as the reference implementation does
    under DDP). Returns ``{"loss", "inter", "intra"}``; no gradient flows into ``teacher_logits``.
    """
    check_logits(student_logits, teacher_logits)
    if student_logits.shape[0] < 2:
        raise ValueError(
            f"dist_loss needs a batch of at least 2 samples for its intra-class (over the batch) relation, "
            f"got {student_logits.shape[0]}."
        )
    beta = check_nonnegative("beta", beta)
    gamma = check_nonnegative("gamma", gamma)
    tau = check_positive("tau", tau)
    dtype = compute_dtype(student_logits, teacher_logits)
    y_s = torch.softmax(student_logits.to(dtype) / tau, dim=1)
    y_t = torch.softmax(teacher_logits.detach().to(dtype) / tau, dim=1)
    inter = tau**2 * (1 - _pearson_rows(y_s, y_t).mean())
    intra = tau**2 * (1 - _pearson_rows(y_s.t(), y_t.t()).mean())
    return {"loss": beta * inter + gamma * intra, "inter": inter, "intra": intra}


@register_loss("dist")
class DISTLoss(DistillationLoss):
    """``dist_loss`` as a loss object."""

    def __init__(self, *, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0) -> None:
        super().__init__()
        self.beta = check_nonnegative("beta", beta)
        self.gamma = check_nonnegative("gamma", gamma)
        self.tau = check_positive("tau", tau)

    def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None):
        return dist_loss(student_logits, teacher_logits, beta=self.beta, gamma=self.gamma, tau=self.tau)

    def describe(self) -> str:
        return (
            f"DIST: tau^2*({self.beta}*(1-Pearson over classes) + {self.gamma}*(1-Pearson over batch)), "
            f"tau={self.tau}"
        )
