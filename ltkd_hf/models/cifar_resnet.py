"""CIFAR ResNets of the CIFAR KD model zoo: resnet8x4, resnet32x4 (BasicBlock) and ResNet-50 (Bottleneck).

Layer for layer the definitions of CRD / mdistiller (``resnet.py`` for the x4 models, ``resnetv2.py``
for ResNet-50): a 3x3 stride-1 stem without max-pool, stages of timm's own ResNet blocks, a 1x1-conv
+ BN shortcut wherever the shape changes, global average pooling and a linear classifier.
"""

from functools import partial
from typing import Any

from torch import nn
from timm.models import generate_default_cfgs, named_apply, register_model
from timm.models.resnet import BasicBlock, Bottleneck, downsample_conv

from ._cifar import CifarClassifier, build_cifar_model, cifar_cfg, init_weights

__all__ = ["CifarResNet"]


def _make_stage(block: type, in_chs: int, planes: int, depth: int, stride: int) -> nn.Sequential:
    out_chs = planes * block.expansion
    blocks = []
    for index in range(depth):
        block_in = in_chs if index == 0 else out_chs
        block_stride = stride if index == 0 else 1
        downsample = None
        if block_stride != 1 or block_in != out_chs:
            downsample = downsample_conv(block_in, out_chs, kernel_size=1, stride=block_stride)
        blocks.append(block(block_in, planes, stride=block_stride, downsample=downsample))
    return nn.Sequential(*blocks)


class CifarResNet(CifarClassifier):
    """ResNet for 32x32 inputs: 3x3 stem, no max-pool, one stage per entry of ``planes``."""

    def __init__(
        self,
        block: type = BasicBlock,
        layers: tuple[int, ...] = (1, 1, 1),
        planes: tuple[int, ...] = (64, 128, 256),
        stem_width: int = 32,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        """
        Args:
            block: timm's ``BasicBlock`` or ``Bottleneck``.
            layers: blocks per stage.
            planes: each stage's block width (the stage outputs ``planes * block.expansion``).
            stem_width: channels of the 3x3 stem.
            num_classes: classifier outputs (0: no classifier, ``forward`` gives pooled features).
            in_chans: input channels.
            global_pool: timm pooling type of the head (the zoo uses global average pooling).
            drop_rate: dropout before the classifier.
        """
        super().__init__()
        if len(layers) != len(planes):
            raise ValueError(f"layers={layers} and planes={planes} must have one entry per stage.")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        # "preact": the input of the stem's ReLU and of each stage's last block's final ReLU (the block's sum).
        self.feature_info = [{"num_chs": stem_width, "reduction": 1, "module": "stem", "preact": ("stem.2", "input")}]
        stages, in_chs, reduction = [], stem_width, 1
        for index, (depth, width) in enumerate(zip(layers, planes)):
            stride = 1 if index == 0 else 2
            reduction *= stride
            stages.append(_make_stage(block, in_chs, width, depth, stride))
            in_chs = width * block.expansion
            last_act = f"stages.{index}.{depth - 1}.{'act3' if hasattr(stages[-1][-1], 'act3') else 'act2'}"
            self.feature_info.append(
                {"num_chs": in_chs, "reduction": reduction, "module": f"stages.{index}", "preact": (last_act, "input")}
            )
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self._init_head(in_chs, num_classes, global_pool, drop_rate)
        named_apply(partial(init_weights, linear_init="torch"), self)


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_cifar_model(CifarResNet, variant, pretrained, len(kwargs["layers"]), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "cifar_resnet8x4": cifar_cfg(),
        "cifar_resnet32x4": cifar_cfg(),
        "cifar_resnet50": cifar_cfg(),
    }
)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet8x4 (CIFAR KD student): depth 8, widths 32 / 64 / 128 / 256."""
    model_args = dict(block=BasicBlock, layers=(1, 1, 1), planes=(64, 128, 256), stem_width=32)
    return _create_cifar_resnet("cifar_resnet8x4", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet32x4 (CIFAR KD teacher): depth 32, widths 32 / 64 / 128 / 256."""
    model_args = dict(block=BasicBlock, layers=(5, 5, 5), planes=(64, 128, 256), stem_width=32)
    return _create_cifar_resnet("cifar_resnet32x4", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet50(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 for 32x32 inputs (CIFAR KD teacher): Bottleneck stages 3 / 4 / 6 / 3, 3x3 stem of 64."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), planes=(64, 128, 256, 512), stem_width=64)
    return _create_cifar_resnet("cifar_resnet50", pretrained, **dict(model_args, **kwargs))
