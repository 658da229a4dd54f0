"""Distillation losses on logits: LTKD and the paper's logit baselines, plus the loss registry.

Pure functions (``ltkd_loss``, ``kd_loss``, ``dkd_loss``, ``dist_loss``, ``bkd_loss``) return dicts of
named float32 terms whose ``"loss"`` entry is the weighted total; ``create_loss(name, ...)`` builds the
matching ``DistillationLoss`` module the trainer calls.
"""

from .bkd import BKDLoss, bkd_loss, effective_number_weights
from .ce import NoDistillation
from .dist import DISTLoss, dist_loss
from .dkd import DKDLoss, dkd_loss
from .kd import KDLoss, kd_loss
from .ltkd import LTKDLoss, ltkd_loss, rebalance_group_mass, rebalance_log_scales
from .registry import LOSSES, DistillationLoss, available_losses, create_loss, register_loss

__all__ = [
    "LOSSES",
    "BKDLoss",
    "DISTLoss",
    "DKDLoss",
    "DistillationLoss",
    "KDLoss",
    "LTKDLoss",
    "NoDistillation",
    "available_losses",
    "bkd_loss",
    "create_loss",
    "dist_loss",
    "dkd_loss",
    "effective_number_weights",
    "kd_loss",
    "ltkd_loss",
    "rebalance_group_mass",
    "rebalance_log_scales",
    "register_loss",
]
