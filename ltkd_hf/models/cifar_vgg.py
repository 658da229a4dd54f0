"""VGGs with BatchNorm of the CIFAR KD model zoo: VGG13 and VGG8.

Layer for layer the definition of CRD / mdistiller (``vgg.py``, ``vgg13_bn`` / ``vgg8_bn``): five
blocks of 3x3 conv (with bias) + BN + ReLU, 2x2 max-pools between the first four, no pool before the
last block at 32x32 (one at 64x64, TinyImageNet), global average pooling and one linear layer.
"""

from functools import partial
from typing import Any

from torch import nn
from timm.models import generate_default_cfgs, named_apply, register_model

from ._cifar import CifarClassifier, build_cifar_model, cifar_cfg, init_weights

__all__ = ["CifarVGG"]

VGG13_CFG = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))
VGG8_CFG = ((64,), (128,), (256,), (512,), (512,))


def _conv_bn_relu(widths: tuple[int, ...], in_chs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_chs, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_chs = width
    return layers


class CifarVGG(CifarClassifier):
    """VGG-BN for 32x32 (or 64x64) inputs; stage i = max-pool (i > 0) + block i."""

    def __init__(
        self,
        cfg: tuple[tuple[int, ...], ...] = VGG13_CFG,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        img_size: int = 32,
        drop_rate: float = 0.0,
    ) -> None:
        """
        Args:
            cfg: conv widths per block, five blocks.
            num_classes: classifier outputs (0: no classifier).
            in_chans: input channels.
            global_pool: timm pooling type of the head (the zoo uses global average pooling).
            img_size: 32 (CIFAR) or 64 (TinyImageNet: one more max-pool before the last block).
            drop_rate: dropout before the classifier.
        """
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"cfg={cfg} must list the conv widths of exactly 5 blocks.")
        self.stem = nn.Sequential(*_conv_bn_relu(cfg[0], in_chans))
        # "preact": the input of each block's last ReLU (its last BN's output).
        self.feature_info = [
            {"num_chs": cfg[0][-1], "reduction": 1, "module": "stem", "preact": (f"stem.{len(self.stem) - 1}", "input")}
        ]
        stages, reduction = [], 1
        for index in range(1, 5):
            pool = index < 4 or img_size > 32
            reduction *= 2 if pool else 1
            layers = [nn.MaxPool2d(kernel_size=2, stride=2)] if pool else []
            stages.append(nn.Sequential(*layers, *_conv_bn_relu(cfg[index], cfg[index - 1][-1])))
            module, last_act = f"stages.{index - 1}", f"stages.{index - 1}.{len(stages[-1]) - 1}"
            self.feature_info.append(
                {"num_chs": cfg[index][-1], "reduction": reduction, "module": module, "preact": (last_act, "input")}
            )
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self._init_head(cfg[-1][-1], num_classes, global_pool, drop_rate)
        named_apply(partial(init_weights, linear_init="normal"), self)


def _create_vgg(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build_cifar_model(CifarVGG, variant, pretrained, 4, **kwargs)


default_cfgs = generate_default_cfgs({"cifar_vgg13": cifar_cfg(), "cifar_vgg8": cifar_cfg()})


@register_model
def cifar_vgg13(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG13 with BatchNorm (CIFAR KD teacher)."""
    return _create_vgg("cifar_vgg13", pretrained, **dict(dict(cfg=VGG13_CFG), **kwargs))


@register_model
def cifar_vgg8(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG8 with BatchNorm (CIFAR KD student)."""
    return _create_vgg("cifar_vgg8", pretrained, **dict(dict(cfg=VGG8_CFG), **kwargs))
