"""Image transforms from a timm data config, the batch transform for ``with_transform``, the collate,
and the input conversion between two models that normalise differently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from datasets import DatasetDict
from timm.data import create_transform
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

__all__ = [
    "SMALL_INPUT_MAX",
    "build_transforms",
    "ImageClassificationTransform",
    "apply_transforms",
    "collate_fn",
    "NormalizationConverter",
    "normalization_converter",
]

# Inputs up to this side length get the CIFAR recipe; timm's ImageNet recipe (random-resized crop to
# 8% of the area, colour jitter) destroys images this small.
SMALL_INPUT_MAX = 64
_REQUIRED = ("input_size", "mean", "std")


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


def build_transforms(data_config: Mapping[str, Any], *, train: bool) -> Callable:
    """The torchvision transform from a PIL image to a normalised ``(3, H, W)`` float tensor.

    Inputs of side <= ``SMALL_INPUT_MAX``: resize to ``(H, W)`` (a no-op for images of that size), then
    for training ``RandomCrop((H, W), padding=4)`` and ``RandomHorizontalFlip``; ``ToTensor``,
    ``Normalize(mean, std)``. Larger inputs: ``timm.data.create_transform`` with the config's
    interpolation, crop_pct and crop_mode (random-resized crop, flip, colour jitter for training;
    resize + center crop for evaluation). Evaluation transforms are deterministic.
    """
    height, width = _check_config(data_config)
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    interpolation = data_config.get("interpolation", "bilinear")
    if max(height, width) > SMALL_INPUT_MAX:
        return create_transform(
            (3, height, width),
            is_training=train,
            interpolation=interpolation,
            mean=mean,
            std=std,
            crop_pct=data_config.get("crop_pct"),
            crop_mode=data_config.get("crop_mode"),
        )
    steps: list[Callable] = [T.Resize((height, width), interpolation=str_to_interp_mode(interpolation))]
    if train:
        steps += [T.RandomCrop((height, width), padding=4), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


@dataclass
class ImageClassificationTransform:
    """Maps a batch ``{"image": [PIL], "label": [int]}`` to ``{"pixel_values": [tensor], "labels": [int]}``,
    for ``Dataset.with_transform``. Images are converted to RGB first (grayscale and CMYK files exist in
    ImageNet)."""

    transform: Callable

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        return {
            "pixel_values": [self.transform(image.convert("RGB")) for image in batch["image"]],
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


@dataclass(frozen=True)
class NormalizationConverter:
    """Turns pixel values normalised with one (mean, std) into pixel values normalised with another:
    ``x * scale + shift`` per channel."""

    scale: tuple[float, float, float]
    shift: tuple[float, float, float]

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"device": pixel_values.device, "dtype": pixel_values.dtype}
        scale = torch.tensor(self.scale, **kwargs).view(3, 1, 1)
        shift = torch.tensor(self.shift, **kwargs).view(3, 1, 1)
        return pixel_values * scale + shift


def normalization_converter(
    student_cfg: Mapping[str, Any], teacher_cfg: Mapping[str, Any]
) -> NormalizationConverter | None:
    """The conversion from the student's normalised inputs to the teacher's, or ``None`` when both use the
    same mean and std. Only mean/std are converted: both models must take the same input size."""
    student_size, teacher_size = _check_config(student_cfg, "student_cfg"), _check_config(teacher_cfg, "teacher_cfg")
    if student_size != teacher_size:
        raise ValueError(
            f"student_cfg input_size {tuple(student_cfg['input_size'])} and teacher_cfg input_size "
            f"{tuple(teacher_cfg['input_size'])} differ; the teacher sees the student's images, so both "
            "models must take the same input size (set the teacher's pretrained_cfg input_size to match)."
        )
    mean_s, std_s = tuple(map(float, student_cfg["mean"])), tuple(map(float, student_cfg["std"]))
    mean_t, std_t = tuple(map(float, teacher_cfg["mean"])), tuple(map(float, teacher_cfg["std"]))
    if (mean_s, std_s) == (mean_t, std_t):
        return None
    # x_t = (x_raw - mean_t) / std_t with x_raw = x_s * std_s + mean_s.
    scale = tuple(s / t for s, t in zip(std_s, std_t))
    shift = tuple((ms - mt) / t for ms, mt, t in zip(mean_s, mean_t, std_t))
    return NormalizationConverter(scale, shift)
