"""Wide ResNets of the CIFAR KD model zoo: WRN-40-2 and WRN-40-1.

Layer for layer the definition of CRD / mdistiller (``wrn.py``, after Zagoruyko & Komodakis):
pre-activation blocks, a 1x1 shortcut conv where the width changes, a closing BN-ReLU before pooling.
"""

from functools import partial
from typing import Any

import torch
from torch import nn
from timm.layers import BatchNormAct2d, create_conv2d
from timm.models import generate_default_cfgs, named_apply, register_model

from ._cifar import CifarClassifier, build_cifar_model, cifar_cfg, init_weights

__all__ = ["WideResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; when the width changes the shortcut convolves the activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)  # apart from its ReLU: the zoo's preact features read the BN output
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = create_conv2d(in_chs, out_chs, 3, stride=stride)
        self.bn2 = BatchNormAct2d(out_chs)
        self.drop = nn.Dropout(drop_rate)
        self.conv2 = create_conv2d(out_chs, out_chs, 3)
        self.shortcut = create_conv2d(in_chs, out_chs, 1, stride=stride) if in_chs != out_chs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.act1(self.bn1(x))
        out = self.conv2(self.drop(self.bn2(self.conv1(activated))))
        # As in the reference: an identity shortcut carries the raw input, a projection the activated one.
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(CifarClassifier):
    """WRN-depth-widen for 32x32 inputs: 3x3 stem of 16, three stages of (depth - 4) / 6 blocks."""

    def __init__(
        self,
        depth: int = 40,
        widen_factor: int = 2,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        block_drop_rate: float = 0.0,
    ) -> None:
        """
        Args:
            depth: 6n + 4 layers.
            widen_factor: stage widths are 16, 32, 64 times this.
            num_classes: classifier outputs (0: no classifier).
            in_chans: input channels.
            global_pool: timm pooling type of the head (the zoo uses global average pooling).
            drop_rate: dropout before the classifier.
            block_drop_rate: dropout between a block's two convolutions (WRN's dropRate).
        """
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth={depth} is not a WideResNet depth: use 6n + 4 (16, 28, 40, ...).")
        per_stage = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, kernel_size=3, padding=1, bias=False))
        # "preact", as the zoo's preact WRN features: the stem has no activation (its output); a stage's output
        # after the next block's BN (after final's BN for the last stage), the input of the ReLU that follows.
        self.feature_info = [{"num_chs": 16, "reduction": 1, "module": "stem", "preact": ("stem", "output")}]
        stages, in_chs, reduction = [], 16, 1
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            reduction *= stride
            blocks = [
                PreActBlock(in_chs if i == 0 else width, width, stride if i == 0 else 1, block_drop_rate)
                for i in range(per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            in_chs = width
            following = f"stages.{index + 1}.0.act1" if index + 1 < len(widths) else "final.1"
            self.feature_info.append(
                {"num_chs": width, "reduction": reduction, "module": f"stages.{index}", "preact": (following, "input")}
            )
        self.stages = nn.ModuleList(stages)
        self.final = nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU(inplace=True))
        self._init_head(in_chs, num_classes, global_pool, drop_rate)
        named_apply(partial(init_weights, linear_init="zero_bias"), self)


def _create_wrn(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_cifar_model(WideResNet, variant, pretrained, 3, **kwargs)


default_cfgs = generate_default_cfgs({"cifar_wrn_40_2": cifar_cfg(), "cifar_wrn_40_1": cifar_cfg()})


@register_model
def cifar_wrn_40_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-2 (CIFAR KD teacher)."""
    return _create_wrn("cifar_wrn_40_2", pretrained, **dict(dict(depth=40, widen_factor=2), **kwargs))


@register_model
def cifar_wrn_40_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-1 (CIFAR KD student)."""
    return _create_wrn("cifar_wrn_40_1", pretrained, **dict(dict(depth=40, widen_factor=1), **kwargs))
