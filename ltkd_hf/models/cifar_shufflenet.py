"""ShuffleNetV1 of the CIFAR KD model zoo (out_planes 240 / 480 / 960, blocks 4 / 8 / 4, groups 3).

Layer for layer the definition of CRD / mdistiller (``ShuffleNetv1.py``): a 1x1 stem of 24 channels,
grouped 1x1 convs around a depthwise 3x3 with a channel shuffle, and at each stage's first block a
stride-2 branch concatenated with a 3x3 average-pooled shortcut.
"""

from typing import Any

import torch
from torch import nn
from timm.layers import BatchNormAct2d, create_conv2d
from timm.models import generate_default_cfgs, register_model

from ._cifar import CifarClassifier, build_cifar_model, cifar_cfg

__all__ = ["ShuffleNetV1"]


class ShuffleUnit(nn.Module):
    """ShuffleNetV1 unit: residual add at stride 1, concatenation with a pooled shortcut at stride 2."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int) -> None:
        """``out_chs`` is the branch's width; ``first_groups`` groups the first 1x1 conv."""
        super().__init__()
        mid_chs = out_chs // 4
        self.stride = stride
        self.conv1 = create_conv2d(in_chs, mid_chs, 1, groups=first_groups)
        self.bn1 = BatchNormAct2d(mid_chs)
        self.shuffle = nn.ChannelShuffle(first_groups)
        self.conv2 = create_conv2d(mid_chs, mid_chs, 3, stride=stride, depthwise=True)
        self.bn2 = BatchNormAct2d(mid_chs)
        self.conv3 = create_conv2d(mid_chs, out_chs, 1, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)  # after the residual sum / concatenation
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        shortcut = self.shortcut(x)
        return self.act(torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut)


class ShuffleNetV1(CifarClassifier):
    """ShuffleNetV1 for 32x32 inputs: each stage halves the resolution in its first unit."""

    def __init__(
        self,
        out_planes: tuple[int, ...] = (240, 480, 960),
        num_blocks: tuple[int, ...] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        """
        Args:
            out_planes: each stage's output channels.
            num_blocks: units per stage.
            groups: groups of the 1x1 convolutions.
            num_classes: classifier outputs (0: no classifier).
            in_chans: input channels.
            global_pool: timm pooling type of the head (the zoo uses global average pooling).
            drop_rate: dropout before the classifier.
        """
        super().__init__()
        stem_width = 24
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, kernel_size=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        # "preact": the input of the stem's ReLU and of each stage's last unit's final ReLU (its last call).
        self.feature_info = [{"num_chs": stem_width, "reduction": 1, "module": "stem", "preact": ("stem.2", "input")}]
        stages, in_chs, reduction = [], stem_width, 1
        for index, (width, depth) in enumerate(zip(out_planes, num_blocks)):
            reduction *= 2
            units = []
            for i in range(depth):
                # The first unit's branch adds width - in_chs channels; the pooled input fills the rest.
                branch_out = width - in_chs if i == 0 else width
                # The stem's 24 channels are not split into groups (as in the reference).
                first_groups = 1 if in_chs == stem_width else groups
                units.append(ShuffleUnit(in_chs, branch_out, 2 if i == 0 else 1, groups, first_groups))
                in_chs = width
            stages.append(nn.Sequential(*units))
            last_act = f"stages.{index}.{depth - 1}.act"
            self.feature_info.append(
                {"num_chs": width, "reduction": reduction, "module": f"stages.{index}", "preact": (last_act, "input")}
            )
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self._init_head(in_chs, num_classes, global_pool, drop_rate)


def _create_shufflenet(variant: str, pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return build_cifar_model(ShuffleNetV1, variant, pretrained, len(kwargs.get("num_blocks", (4, 8, 4))), **kwargs)


default_cfgs = generate_default_cfgs({"cifar_shufflenet_v1": cifar_cfg()})


@register_model
def cifar_shufflenet_v1(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNetV1, groups 3 (CIFAR KD student)."""
    model_args = dict(out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups=3)
    return _create_shufflenet("cifar_shufflenet_v1", pretrained, **dict(model_args, **kwargs))
