"""MobileNetV2 of the CIFAR KD model zoo (width 0.5, expansion 6, CIFAR strides).

Layer for layer the definition of CRD / mdistiller (``mobilenetv2.py``, ``mobile_half``): a stride-2
3x3 stem, timm's inverted residuals (the first, t = 1, block still has its 1x1 expansion conv), stride 1
in the second setting, a 1x1 conv to 1280 channels, global average pooling and one linear layer.
"""

from functools import partial
from typing import Any

from torch import nn
from timm.layers import ConvNormAct, make_divisible
from timm.models import generate_default_cfgs, named_apply, register_model
from timm.models._efficientnet_blocks import InvertedResidual

from ._cifar import CifarClassifier, build_cifar_model, cifar_cfg, init_weights

__all__ = ["CifarMobileNetV2"]


# (expansion, channels, blocks, stride) per setting; None = the model's expand_ratio.
_SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Settings grouped into the stages whose outputs the model zoo exposes as features.
_STAGE_SETTINGS = ((0, 1), (2,), (3, 4), (5, 6))


class CifarMobileNetV2(CifarClassifier):
    """MobileNetV2 for 32x32 inputs (total stride 16, a 2x2 map before pooling)."""

    def __init__(
        self,
        width_mult: float = 0.5,
        expand_ratio: int = 6,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        """
        Args:
            width_mult: channel multiplier of the stem and blocks (the 1280-channel head conv only grows); each
                block's expanded width must be a multiple of 8 (as with 0.5 and 1.0).
            expand_ratio: expansion of every setting after the first.
            num_classes: classifier outputs (0: no classifier).
            in_chans: input channels.
            global_pool: timm pooling type of the head (the zoo uses global average pooling).
            drop_rate: dropout before the classifier.
        """
        super().__init__()
        in_chs = int(32 * width_mult)
        self.stem = nn.Sequential(  # conv, BN, ReLU as separate modules: the preact feature is the BN output
            nn.Conv2d(in_chans, in_chs, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(in_chs),
            nn.ReLU(inplace=True),
        )
        # "preact": the input of the stem's ReLU; the stages end in linear bottlenecks, so their outputs.
        self.feature_info = [{"num_chs": in_chs, "reduction": 2, "module": "stem", "preact": ("stem.2", "input")}]
        reduction, stages = 2, []
        for stage_index, setting_indices in enumerate(_STAGE_SETTINGS):
            blocks = []
            for setting_index in setting_indices:
                ratio, channels, depth, stride = _SETTINGS[setting_index]
                ratio, out_chs = ratio or expand_ratio, int(channels * width_mult)
                for i in range(depth):
                    mid_chs = in_chs * ratio  # timm's InvertedResidual rounds it to a multiple of 8: keep it exact
                    if make_divisible(mid_chs) != mid_chs:
                        raise ValueError(f"width_mult={width_mult}: expanded width {mid_chs} is not a multiple of 8.")
                    blocks.append(InvertedResidual(in_chs, out_chs, stride=stride if i == 0 else 1, exp_ratio=ratio))
                    in_chs = out_chs
                reduction *= stride
            stages.append(nn.Sequential(*blocks))
            module = f"stages.{stage_index}"
            self.feature_info.append(
                {"num_chs": in_chs, "reduction": reduction, "module": module, "preact": (module, "output")}
            )
        self.stages = nn.ModuleList(stages)
        head_chs = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.final = ConvNormAct(in_chs, head_chs, 1)
        self._init_head(head_chs, num_classes, global_pool, drop_rate)
        named_apply(partial(init_weights, linear_init="normal"), self)


def _create_mobilenet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    return build_cifar_model(CifarMobileNetV2, variant, pretrained, 4, **kwargs)


default_cfgs = generate_default_cfgs({"cifar_mobilenet_v2": cifar_cfg()})


@register_model
def cifar_mobilenet_v2(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """MobileNetV2, width 0.5, expansion 6 (CIFAR KD student, the zoo's ``mobile_half``)."""
    return _create_mobilenet("cifar_mobilenet_v2", pretrained, **dict(dict(width_mult=0.5, expand_ratio=6), **kwargs))
