"""Distillation losses: LTKD, the paper's logit baselines and its feature baselines, plus the loss registry.

Pure functions (``ltkd_loss``, ``kd_loss``, ``dkd_loss``, ``dist_loss``, ``bkd_loss``, ``catkd_loss``)
return dicts of named float32 terms (float64 for float64 inputs) whose ``"loss"`` entry is the weighted total;
``create_loss(name, ...)`` builds the matching ``DistillationLoss`` module the trainer calls. The feature
losses (``reviewkd``, ``catkd``) read the features ``capture_features`` records during the models' normal
forwards, where the models' timm ``feature_info`` says they are.
"""

from .bkd import BKDLoss, bkd_loss, effective_number_weights
from .catkd import CATKD_AUTHOR_SETTINGS, CATKDLoss, catkd_loss, class_activation_maps
from .ce import NoDistillation, log_class_prior, logit_adjusted_cross_entropy
from .dist import DISTLoss, dist_loss
from .dkd import DKDLoss, dkd_loss
from .features import capture_features, feature_channels, preact_points
from .kd import KDLoss, kd_loss
from .ltkd import LTKDLoss, ltkd_loss, rebalance_group_mass, rebalance_log_scales
from .registry import LOSSES, DistillationLoss, available_losses, create_loss, register_loss
from .reviewkd import ABF, ReviewKDLoss, hcl_loss, reviewkd_channels

__all__ = [
    "ABF",
    "CATKD_AUTHOR_SETTINGS",
    "LOSSES",
    "BKDLoss",
    "CATKDLoss",
    "DISTLoss",
    "DKDLoss",
    "DistillationLoss",
    "KDLoss",
    "LTKDLoss",
    "NoDistillation",
    "ReviewKDLoss",
    "available_losses",
    "bkd_loss",
    "capture_features",
    "catkd_loss",
    "class_activation_maps",
    "create_loss",
    "dist_loss",
    "dkd_loss",
    "effective_number_weights",
    "feature_channels",
    "hcl_loss",
    "kd_loss",
    "log_class_prior",
    "logit_adjusted_cross_entropy",
    "ltkd_loss",
    "preact_points",
    "rebalance_group_mass",
    "rebalance_log_scales",
    "register_loss",
    "reviewkd_channels",
]
