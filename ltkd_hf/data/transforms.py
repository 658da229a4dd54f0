"""Image transforms from a timm data config, the batch transform for ``with_transform``, the collate,
and the input conversion between two models that normalise differently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from datasets import DatasetDict
from PIL import Image
from timm.data import create_transform
from timm.data.transforms import ResizeKeepRatio, str_to_interp_mode
from torchvision import transforms as T

__all__ = [
    "SMALL_INPUT_MAX",
    "build_transforms",
    "ImageClassificationTransform",
    "to_rgb",
    "apply_transforms",
    "collate_fn",
    "NormalizationConverter",
    "normalization_converter",
]

# Training inputs up to this side length get the CIFAR recipe; timm's ImageNet recipe (random-resized crop to
# 8% of the area, colour jitter) destroys images this small.
SMALL_INPUT_MAX = 64
_REQUIRED = ("input_size", "mean", "std")
_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def _check_config(data_config: Mapping[str, Any], argument: str = "data_config") -> tuple[int, int]:
    missing = [k for k in _REQUIRED if k not in data_config]
    if missing:
        raise ValueError(
            f"{argument} lacks {missing} (it has {sorted(data_config)}); pass "
            "timm.data.resolve_data_config(model=model) or the model's pretrained_cfg."
        )
    size = tuple(data_config["input_size"])
    if len(size) != 3 or size[0] != 3:
        raise ValueError(f"{argument}['input_size'] must be (3, H, W), got {data_config['input_size']!r}.")
    for key in ("mean", "std"):
        if len(tuple(data_config[key])) != 3:
            raise ValueError(f"{argument}[{key!r}] must hold 3 values (R, G, B), got {data_config[key]!r}.")
    return int(size[1]), int(size[2])


def _eval_transform_kwargs(data_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``timm.data.create_transform`` arguments a data config sets (what ``resolve_data_config`` returns);
    absent optional keys keep timm's defaults."""
    return {key: data_config[key] for key in _TRANSFORM_KEYS if data_config.get(key) is not None}


def _resize_keep_ratio(height: int, width: int, interpolation: str) -> Callable:
    """Resize so the image covers ``(height, width)`` with its aspect ratio kept: timm's evaluation resize at
    ``crop_pct=1`` (torchvision's short-side ``Resize`` for a square target, timm's ``ResizeKeepRatio`` else)."""
    if height == width:
        return T.Resize(height, interpolation=str_to_interp_mode(interpolation))
    return ResizeKeepRatio((height, width), interpolation=interpolation)


def build_transforms(data_config: Mapping[str, Any], *, train: bool) -> Callable:
    """The torchvision transform from a PIL image to a normalised ``(3, H, W)`` float tensor.

    Evaluation (``train=False``), every input size: exactly timm's evaluation transform,
    ``timm.data.create_transform(**data_config, is_training=False)`` (the config's ``input_size``,
    ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``; timm's defaults for absent optional
    keys, e.g. ``crop_pct`` 0.875). It is also what transformers' ``TimmWrapperImageProcessor`` (and so
    ``pipeline("image-classification")``) applies for a saved student, so evaluation here and inference there
    see the same pixels: the short side is resized to ``size / crop_pct`` and the centre is cropped, keeping the
    aspect ratio (a 40x24 image is not squashed to 32x32). Deterministic.

    Training, inputs of side <= ``SMALL_INPUT_MAX`` (the CIFAR recipe): resize with the aspect ratio kept so the
    image covers ``(H, W)`` and centre-crop it (timm's evaluation resize at ``crop_pct=1``; a no-op for images
    already of that size), then ``RandomCrop((H, W), padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
    ``Normalize(mean, std)``. This recipe ignores ``crop_pct``: for evaluation to see the training scale, a
    small-input model should declare ``crop_pct=1`` (the CIFAR models do; an ImageNet model resized with
    ``img_size=32`` keeps its tag's 0.875-0.95, a 1.1x zoom at evaluation). Larger inputs: timm's training
    recipe, ``create_transform(..., is_training=True)`` (random-resized crop, flip, colour jitter).
    """
    height, width = _check_config(data_config)
    if not train:
        return create_transform(**_eval_transform_kwargs(data_config), is_training=False)
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    interpolation = data_config.get("interpolation") or "bilinear"
    if max(height, width) > SMALL_INPUT_MAX:
        return create_transform(**_eval_transform_kwargs(data_config), is_training=True)
    return T.Compose(
        [
            _resize_keep_ratio(height, width, interpolation),
            T.CenterCrop((height, width)),
            T.RandomCrop((height, width), padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


# Integer grayscale modes PIL opens a 16-bit PNG or TIFF as; ``convert("RGB")`` clips their values at 255.
_WIDE_GRAYSCALE = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, what every model here reads. 16-bit grayscale (PIL modes ``I;16*``, and ``I`` as a
    16-bit PNG opens) is scaled to 8 bits (``round(v / 257)``), where PIL's own ``convert("RGB")`` clips every
    value above 255 and turns the image white; every other mode (L, P, RGBA, CMYK, ...) is PIL's ``convert``."""
    if image.mode in _WIDE_GRAYSCALE:
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    return image.convert("RGB")


@dataclass
class ImageClassificationTransform:
    """Maps a batch ``{"image": [PIL], "label": [int]}`` to ``{"pixel_values": [tensor], "labels": [int]}``,
    for ``Dataset.with_transform``. Images are converted to RGB first with `to_rgb` (grayscale and CMYK files
    exist in ImageNet; 16-bit grayscale is scaled, not clipped)."""

    transform: Callable

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        return {
            "pixel_values": [self.transform(to_rgb(image)) for image in batch["image"]],
            "labels": [int(label) for label in batch["label"]],
        }


def apply_transforms(dataset_dict: DatasetDict, data_config: Mapping[str, Any]) -> DatasetDict:
    """``dataset_dict`` with lazy transforms set: ``train`` gets the training transform, every other split
    the evaluation transform. Splits need the standard ``image`` and ``label`` columns."""
    _check_config(data_config)
    out = {}
    for name, split in dataset_dict.items():
        missing = [c for c in ("image", "label") if c not in split.column_names]
        if missing:
            raise ValueError(
                f"split {name!r} lacks columns {missing} (it has {split.column_names}); load it with "
                "load_image_dataset, which names them 'image' and 'label'."
            )
        transform = ImageClassificationTransform(build_transforms(data_config, train=name == "train"))
        out[name] = split.with_transform(transform)
    return DatasetDict(out)


def collate_fn(examples: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack examples into ``{"pixel_values": FloatTensor (B, 3, H, W), "labels": LongTensor (B,)}``."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]).float(),
        "labels": torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long),
    }


# timm's interpolation names -> torch.nn.functional.interpolate modes (torch has no lanczos/hamming: bicubic
# is the closest; timm's "random" draws a mode per image, bilinear is its default).
_TORCH_MODES = {
    "nearest": "nearest-exact",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "box": "area",
    "random": "bilinear",
}
_ANTIALIAS_MODES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class NormalizationConverter:
    """Turns the student's pixel values into the teacher's: ``x * scale + shift`` per channel (another mean/std),
    then, when ``size`` is set, a resize of the batch to the teacher's ``(H, W)``.

    The resize keeps the aspect ratio: the batch is scaled to cover ``size`` with
    ``torch.nn.functional.interpolate(mode=mode, antialias=...)`` and centre-cropped (for the same aspect
    ratio, as for square inputs, that is a plain resize to ``size``). ``antialias`` applies to bilinear and
    bicubic only, as in torch. Half-precision batches are resized in float32 (torch's antialiased kernels lack
    bfloat16 on CPU) and returned in their own dtype.
    """

    scale: tuple[float, float, float]
    shift: tuple[float, float, float]
    size: tuple[int, int] | None = None
    mode: str = "bilinear"
    antialias: bool = True

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"device": pixel_values.device, "dtype": pixel_values.dtype}
        if (self.scale, self.shift) != ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)):
            scale = torch.tensor(self.scale, **kwargs).view(3, 1, 1)
            shift = torch.tensor(self.shift, **kwargs).view(3, 1, 1)
            pixel_values = pixel_values * scale + shift
        if self.size is None or tuple(pixel_values.shape[-2:]) == tuple(self.size):
            return pixel_values
        return self._resize(pixel_values)

    def _resize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        (height, width), (target_h, target_w) = pixel_values.shape[-2:], self.size
        factor = max(target_h / height, target_w / width)  # cover the target, keep the aspect ratio
        covered = (max(target_h, round(height * factor)), max(target_w, round(width * factor)))
        batched = pixel_values if pixel_values.dim() == 4 else pixel_values.unsqueeze(0)
        work = batched.float() if batched.dtype in (torch.float16, torch.bfloat16) else batched
        extra = {"antialias": self.antialias} if self.mode in _ANTIALIAS_MODES else {}
        if self.mode in ("bilinear", "bicubic"):
            extra["align_corners"] = False
        resized = torch.nn.functional.interpolate(work, size=covered, mode=self.mode, **extra)
        top, left = (covered[0] - target_h) // 2, (covered[1] - target_w) // 2
        resized = resized[..., top : top + target_h, left : left + target_w].to(batched.dtype)
        return resized if pixel_values.dim() == 4 else resized.squeeze(0)


def normalization_converter(
    student_cfg: Mapping[str, Any], teacher_cfg: Mapping[str, Any]
) -> NormalizationConverter | None:
    """The conversion from the student's model inputs to the teacher's, or ``None`` when both take the same
    input (same mean, std and input size).

    The student's normalised pixel values are mapped to the teacher's mean/std, and, when the teacher's
    ``input_size`` differs, the batch is resized on the tensor to the teacher's ``(H, W)`` with the teacher's
    ``interpolation`` (``torch.nn.functional.interpolate``; antialiased for bilinear/bicubic; nearest as
    ``nearest-exact``, box as ``area``, random as bilinear, lanczos/hamming as bicubic), the aspect ratio kept
    by a centre crop when the two aspect ratios differ. The teacher thus sees the student's crop, resized: not
    the original image through the teacher's own evaluation transform (its ``crop_pct`` is not applied).

    Cost: with a teacher at a larger resolution than the student (e.g. a 224x224 ImageNet teacher for a
    32x32 student), every training batch is resized on the device and the teacher's forward pass runs at the
    teacher's size: (224/32)^2 = 49 times the pixels of the student's batch, which usually makes the teacher's
    forward pass the dominant cost of a step. Upsampling adds no detail either: a teacher trained on
    high-resolution images is fed blurred small ones.
    """
    student_size, teacher_size = _check_config(student_cfg, "student_cfg"), _check_config(teacher_cfg, "teacher_cfg")
    mean_s, std_s = tuple(map(float, student_cfg["mean"])), tuple(map(float, student_cfg["std"]))
    mean_t, std_t = tuple(map(float, teacher_cfg["mean"])), tuple(map(float, teacher_cfg["std"]))
    if (mean_s, std_s, student_size) == (mean_t, std_t, teacher_size):
        return None
    # x_t = (x_raw - mean_t) / std_t with x_raw = x_s * std_s + mean_s.
    scale = tuple(s / t for s, t in zip(std_s, std_t))
    shift = tuple((ms - mt) / t for ms, mt, t in zip(mean_s, mean_t, std_t))
    if student_size == teacher_size:
        return NormalizationConverter(scale, shift)
    interpolation = teacher_cfg.get("interpolation") or "bilinear"
    return NormalizationConverter(scale, shift, size=teacher_size, mode=_TORCH_MODES.get(interpolation, "bicubic"))
