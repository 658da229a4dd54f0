"""What every CIFAR architecture shares: timm's classifier interface, default config and builder.

A CIFAR model here is ``stem -> stages -> final -> head``: the stem's and each stage's outputs are the
intermediate features feature-based losses read (the ``feats`` list of the CIFAR KD model zoo; each
``feature_info`` entry also declares, under ``"preact"``, where the zoo's pre-activation feature is), ``final``
turns the last stage into the map the head pools (identity, or WRN's BN-ReLU, or MobileNetV2's 1x1
conv), and ``head`` is timm's ``ClassifierHead`` (global average pool + linear).
"""

from typing import Any, Literal

import torch
from torch import nn
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    """A timm pretrained_cfg for a 32x32 CIFAR-100 model without published weights."""
    return {
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        **kwargs,
    }


def init_weights(
    module: nn.Module, name: str = "", linear_init: Literal["torch", "zero_bias", "normal"] = "torch"
) -> None:
    """The CIFAR KD model zoo's initialisation of one module; apply it with ``timm.models.named_apply``.

    Convolutions: Kaiming normal (fan-out, ReLU gain), bias zero; BatchNorm: weight one, bias zero. Linear
    layers differ between the zoo's families: ``"torch"`` keeps PyTorch's default (ResNets), ``"zero_bias"``
    zeroes the bias only (WRNs), ``"normal"`` draws the weight from N(0, 0.01^2) and zeroes the bias (VGGs,
    MobileNetV2).
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        if linear_init not in ("torch", "zero_bias", "normal"):
            raise ValueError(f"linear_init={linear_init!r}: expected 'torch', 'zero_bias' or 'normal'.")
        if linear_init == "normal":
            nn.init.normal_(module.weight, 0.0, 0.01)
        if linear_init != "torch":
            nn.init.zeros_(module.bias)


class CifarClassifier(nn.Module):
    """timm's model interface over ``stem``, ``stages``, ``final`` and ``head``, set by a subclass."""

    stem: nn.Module
    stages: nn.ModuleList
    final: nn.Module
    head: ClassifierHead
    num_classes: int
    num_features: int
    feature_info: list[dict[str, Any]]

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        self.head = ClassifierHead(num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when built with ``num_classes=0``)."""
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map the head pools, shape (B, num_features, H', W')."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from a ``forward_features`` map, or the pooled features if ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stem and stage outputs (timm's signature).

        Args:
            x: input images (B, 3, H, W).
            indices: all features if None, the last n if an int, else these positions
                (0 = stem, i = stage i).
            norm: give the last stage's feature after ``final`` (WRN's closing BN-ReLU,
                MobileNetV2's 1x1 head conv), as ``forward_features`` returns it.
            stop_early: skip the stages after the last requested one.
            output_fmt: only "NCHW".
            intermediates_only: return only the list of features.

        Returns:
            The features, or (``forward_features`` output, features); with ``stop_early``
            the first element is the output of the last stage run.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is not supported: these models return 'NCHW' only.")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        last_index = len(self.stages)
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for index, stage in enumerate(stages, start=1):
            x = stage(x)
            if index in take_indices:
                intermediates.append(self.final(x) if norm and index == last_index else x)
        if intermediates_only:
            return intermediates
        if len(stages) == last_index:
            x = self.final(x)
        return x, intermediates


def build_cifar_model(model_cls: type, variant: str, pretrained: bool, num_stages: int, **kwargs: Any) -> nn.Module:
    """Build a registered CIFAR variant through timm (sets pretrained_cfg; features_only via intermediates)."""
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        feature_cfg={"feature_cls": "getter", "out_indices": tuple(range(num_stages + 1))},
        **kwargs,
    )
