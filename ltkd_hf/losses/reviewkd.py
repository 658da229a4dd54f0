"""ReviewKD (Chen et al., CVPR 2021, "Distilling Knowledge via Knowledge Review"), as in the authors' CIFAR code.

The student's features are reviewed deepest first: an attention-based fusion (ABF) module per level maps
the student's feature to the teacher's channels, fusing it with the residual from the level below, and
the hierarchical context loss (HCL) compares each result with the teacher's feature.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_nonnegative
from ._numerics import compute_dtype
from .features import feature_channels, timm_model
from .registry import DistillationLoss, register_loss

__all__ = ["ABF", "ReviewKDLoss", "hcl_loss", "reviewkd_channels"]

HCL_POOL_SIZES = (4, 2, 1)


class ABF(nn.Module):
    """Attention-based fusion: 1x1 conv-BN to ``mid_channels``, fused with the deeper level's residual by a
    two-map sigmoid attention, resized to the teacher's size, 3x3 conv-BN to ``out_channels``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        )
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output at ``out_size`` with ``out_channels``, residual for the next shallower level)."""
        x = self.conv1(x.to(self.conv1[0].weight.dtype))
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            attention = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * attention[:, :1] + residual * attention[:, 1:]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def hcl_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Hierarchical context loss, summed over levels.

    Per level: the MSE at full size, plus the MSEs after adaptive average pooling to 4x4, 2x2 and 1x1
    (only the sizes smaller than the map), weighted 1, 1/2, 1/4, 1/8 in that order over the sizes used, and
    divided by the sum of the weights used. No gradient flows into ``teacher``.
    """
    dtype = compute_dtype(*student, *teacher)
    total = torch.zeros((), dtype=dtype, device=student[0].device)
    for fs, ft in zip(student, teacher):
        fs, ft = fs.to(dtype), ft.detach().to(dtype)
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for size in HCL_POOL_SIZES:
            if size >= min(fs.shape[-2:]):
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            weights += weight
        total = total + loss / weights
    return total


def reviewkd_channels(model: nn.Module) -> list[int]:
    """The channels of the levels ReviewKD compares: every stage output after the stem, then the pooled feature."""
    return feature_channels(model)[1:] + [int(timm_model(model).num_features)]


def _channels(name: str, value: nn.Module | Sequence[int] | None) -> list[int]:
    if value is None:
        raise ValueError(
            f"ReviewKD needs the {name}'s feature channels: pass {name}=<the {name} model> (timm or TimmWrapper) "
            f"or {name}=<list of channels: each stage after the stem, then the pooled width>."
        )
    if isinstance(value, nn.Module):
        return reviewkd_channels(value)
    channels = list(value)
    if len(channels) < 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(
            f"{name}={value!r}: expected a model or at least 2 positive channel counts (stages after the stem, "
            "then the pooled width)."
        )
    return channels


def _levels(features: Mapping[str, object] | None, role: str, stages_key: str) -> list[torch.Tensor]:
    """Stage features after the stem, then the pooled feature as a (B, C, 1, 1) map."""
    capture = "capture_features(teacher, preact=True)" if stages_key == "preact_stages" else f"capture_features({role})"
    if not isinstance(features, Mapping) or stages_key not in features or "pooled" not in features:
        got = sorted(features) if isinstance(features, Mapping) else type(features).__name__
        raise ValueError(
            f"ReviewKD needs {role}_features as a dict with {stages_key!r} and 'pooled' (got {got}); "
            f"fill it with `with {capture} as {role}_features:` around the {role}'s forward."
        )
    stages, pooled = list(features[stages_key]), features["pooled"]
    if any(not isinstance(s, torch.Tensor) or s.dim() != 4 for s in stages) or not isinstance(pooled, torch.Tensor):
        raise ValueError(
            f"{role}_features[{stages_key!r}] must hold (B, C, H, W) tensors and 'pooled' a (B, C) tensor; "
            "was the forward run inside the capture_features block?"
        )
    return stages[1:] + [pooled.reshape(*pooled.shape[:2], 1, 1)]


def _check_levels(role: str, levels: list[torch.Tensor], channels: list[int], batch: int) -> None:
    got = [int(f.shape[1]) for f in levels]
    if got != channels:
        raise ValueError(
            f"the {role}'s features have channels {got} (stages after the stem, then pooled) but this ReviewKD "
            f"was built for {channels}; build the loss from the same {role}: create_loss('reviewkd', "
            f"student=..., teacher=...)."
        )
    if any(f.shape[0] != batch for f in levels):
        raise ValueError(
            f"the {role}'s features hold batch sizes {[int(f.shape[0]) for f in levels]}, expected {batch} "
            "(the student's); both models must see the same batch."
        )


@register_loss("reviewkd")
class ReviewKDLoss(DistillationLoss):
    """ReviewKD: ``loss = reviewkd_loss_weight * HCL(ABF-review(student levels), teacher levels)``.

    Levels: every stage output after the stem, then the pooled feature (as a 1x1 map). The student's
    levels are its post-activation stage outputs (``capture_features(student)["stages"]``); the teacher's
    are its pre-activation stage outputs (``capture_features(teacher, preact=True)["preact_stages"]``, as
    the authors' CIFAR code, ``teacher(x, is_feat=True, preact=True)``) with ``teacher_preact`` (default),
    else its post-activation ones. Both pooled features are ``forward_head(pre_logits=True)``.

    The review runs deepest first: the pooled level's ABF maps the student's pooled feature alone; each
    shallower level's ABF fuses its student feature with the residual of the level below (resized, nearest,
    to the student feature's size) and resizes the result (nearest) to the teacher feature's size before
    its 3x3 conv. The ABFs (``mid_channels``: the authors' ``min(512, student pooled width)`` by default)
    are trainable submodules: add ``loss.parameters()`` to the optimizer and save ``loss.state_dict()``.

    The logits are not used (the authors' CIFAR runs add no KL term). The authors ramp this loss in
    linearly over 20 epochs: the recipes set ``warmup_epochs: 20``. Returns ``{"loss", "hcl"}``.

    Args:
        student: the student model (timm or TimmWrapper), or its level channels (``reviewkd_channels``).
        teacher: the teacher model, or its level channels.
        reviewkd_loss_weight: the HCL weight (the authors' CIFAR runs: 5.0; 8.0 for ShuffleNetV2 students).
        mid_channels: the ABFs' fused width; None: ``min(512, student pooled width)``.
        teacher_preact: compare with the teacher's pre-activation stage features (the authors' choice).
    """

    requires_features = True

    def __init__(
        self,
        *,
        student: nn.Module | Sequence[int] | None = None,
        teacher: nn.Module | Sequence[int] | None = None,
        reviewkd_loss_weight: float = 5.0,
        mid_channels: int | None = None,
        teacher_preact: bool = True,
    ) -> None:
        super().__init__()
        self.student_channels = _channels("student", student)
        self.teacher_channels = _channels("teacher", teacher)
        if len(self.student_channels) != len(self.teacher_channels):
            raise ValueError(
                f"the student has {len(self.student_channels)} feature levels {self.student_channels} but the "
                f"teacher has {len(self.teacher_channels)} {self.teacher_channels} (stages after the stem, then "
                "pooled); ReviewKD pairs them one to one: choose models with the same number of stages."
            )
        self.reviewkd_loss_weight = check_nonnegative("reviewkd_loss_weight", reviewkd_loss_weight)
        if mid_channels is None:
            mid_channels = min(512, self.student_channels[-1])
        if not isinstance(mid_channels, int) or isinstance(mid_channels, bool) or mid_channels < 1:
            raise ValueError(
                f"mid_channels must be a positive integer (or None for the default), got {mid_channels!r}."
            )
        self.mid_channels = mid_channels
        if not isinstance(teacher_preact, bool):
            raise ValueError(f"teacher_preact must be True or False, got {teacher_preact!r}.")
        self.teacher_preact = teacher_preact
        last = len(self.student_channels) - 1
        self.abfs = nn.ModuleList(
            ABF(c_in, mid_channels, c_out, fuse=index < last)
            for index, (c_in, c_out) in enumerate(zip(self.student_channels, self.teacher_channels))
        )

    @property
    def student_capture(self) -> dict[str, bool]:
        """The ``capture_features`` keywords for the student."""
        return {"preact": False}

    @property
    def teacher_capture(self) -> dict[str, bool]:
        """The ``capture_features`` keywords for the teacher."""
        return {"preact": self.teacher_preact}

    def review(
        self, student_levels: Sequence[torch.Tensor], teacher_sizes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """The ABF outputs, shallowest first: level i has the teacher's channels and size ``teacher_sizes[i]``."""
        outputs: list[torch.Tensor] = []
        residual = None
        for abf, level, size in zip(reversed(self.abfs), reversed(student_levels), reversed(teacher_sizes)):
            out, residual = abf(level, residual, size)
            outputs.insert(0, out)
        return outputs

    def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None):
        student_levels = _levels(student_features, "student", "stages")
        teacher_levels = _levels(teacher_features, "teacher", "preact_stages" if self.teacher_preact else "stages")
        batch = int(student_levels[0].shape[0])
        _check_levels("student", student_levels, self.student_channels, batch)
        _check_levels("teacher", teacher_levels, self.teacher_channels, batch)
        reviewed = self.review(student_levels, [tuple(t.shape[-2:]) for t in teacher_levels])
        hcl = hcl_loss(reviewed, teacher_levels)
        return {"loss": self.reviewkd_loss_weight * hcl, "hcl": hcl}

    def describe(self) -> str:
        which = "pre-activation" if self.teacher_preact else "post-activation"
        return (
            f"ReviewKD: {self.reviewkd_loss_weight}*HCL(ABF review of student levels {self.student_channels}, "
            f"teacher {which} levels {self.teacher_channels}), mid {self.mid_channels}"
        )
