"""A split decoded once into a uint8 tensor, and the batched augmentation that turns its batches into
``pixel_values`` on the batch's device: the GPU fast path's data part, for datasets that fit in memory.

The CPU path (`apply_transforms`) decodes, resizes, crops, flips and normalises every image in the data loader,
every epoch. Here each image is decoded and resized once, to the model's input size (what `build_transforms`
does before its random crop for training; timm's evaluation transform before ``ToTensor`` for evaluation), and
kept as uint8 ``(N, 3, H, W)``. The random part of the CIFAR recipe, ``RandomCrop((H, W), padding=4)`` then
``RandomHorizontalFlip``, and ``ToTensor`` + ``Normalize`` run on a whole batch at once on its device
(`BatchAugmentation`), with the CPU transform's distribution: per sample, independently, one of the 9 x 9
offsets and 2 flips, uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import create_transform
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from .transforms import SMALL_INPUT_MAX, _check_config, _eval_transform_kwargs, build_transforms, to_rgb

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BatchAugmentation",
    "InMemoryImages",
    "collate_images",
    "in_memory_bytes",
    "in_memory_datasets",
    "augmentation_outcomes",
    "crop_flip",
    "normalize_images",
    "random_crop_flip",
]

# Refuse to decode a split whose uint8 tensor would exceed this (8 GiB: CIFAR-100's 50,000 training images at
# 32x32 take 0.15 GiB, TinyImageNet's 100,000 at 64x64 1.1 GiB; ImageNet at 224x224 would take 180 GiB).
DEFAULT_MAX_BYTES = 8 * 2**30
_GIB = 2**30


def _size(num_bytes: float) -> str:
    for unit, scale in (("GiB", _GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{int(num_bytes)} bytes"


def in_memory_bytes(num_images: int, data_config: Mapping[str, Any]) -> int:
    """Bytes of ``num_images`` images held as uint8 at ``data_config['input_size']`` (3 x H x W each)."""
    height, width = _check_config(data_config)
    return int(num_images) * 3 * height * width


def _deterministic_steps(data_config: Mapping[str, Any], *, train: bool) -> tuple[list, int | None]:
    """The PIL steps the CPU transform applies before anything random (training) or before ``ToTensor``
    (evaluation), read from the transforms themselves so both paths stay one recipe; and the training crop's
    padding (``None`` for evaluation)."""
    height, width = _check_config(data_config)
    if train:
        if max(height, width) > SMALL_INPUT_MAX:
            raise ValueError(
                f"In-memory training data implements the small-input (CIFAR) recipe, for inputs up to "
                f"{SMALL_INPUT_MAX} px; data_config['input_size'] is {tuple(data_config['input_size'])}, whose CPU "
                "training transform is timm's random-resized crop of the original image, which a decoded "
                "fixed-size copy cannot reproduce. Use the CPU transforms for this model (apply_transforms; in the "
                "recipes, --in_memory_data false)."
            )
        steps = list(build_transforms(data_config, train=True).transforms)
        at = next(i for i, step in enumerate(steps) if isinstance(step, T.RandomCrop))
        crop = steps[at]
        if not isinstance(crop.padding, int) or crop.fill != 0 or crop.padding_mode != "constant":
            raise ValueError(f"Unsupported training crop {crop!r}: the device augmentation pads with zeros only.")
        return steps[:at], crop.padding
    steps = list(create_transform(**_eval_transform_kwargs(data_config), is_training=False).transforms)
    names = [type(step).__name__ for step in steps[-2:]]
    if names not in (["MaybeToTensor", "Normalize"], ["ToTensor", "Normalize"]):
        raise ValueError(
            f"timm's evaluation transform for {dict(data_config)} ends with {names}, not ToTensor + Normalize; the "
            "in-memory copy cannot reproduce it. Use the CPU transforms (apply_transforms)."
        )
    return steps[:-2], None


class InMemoryImages(torch.utils.data.Dataset):
    """A split held as a uint8 tensor ``images`` ``(N, 3, H, W)`` and an int64 tensor ``labels`` ``(N,)``;
    item ``i`` is ``{"images": uint8 (3, H, W), "labels": int, "index": i}``. Batch it with `collate_images` and turn the
    batches into ``pixel_values`` with `BatchAugmentation` (`DistillationTrainer` does, with
    ``device_augmentation=True``).

    Build it with `from_dataset` (or `in_memory_datasets` for a ``DatasetDict``). ``train`` records which
    decoding it holds: the training one (before the random crop; only for inputs up to ``SMALL_INPUT_MAX`` px)
    or the evaluation one. ``class_names``, when known, are the split's label names.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
        *,
        train: bool,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"images must be a uint8 tensor (N, 3, H, W) of pixel values 0..255, got {got}; build it with "
                "InMemoryImages.from_dataset, or convert with (x * 255).round().to(torch.uint8) from 0..1 floats."
            )
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}.")
        labels = torch.as_tensor(labels)
        if labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"labels must be N={images.shape[0]} integers, one per image, got a {labels.dtype} tensor of shape "
                f"{tuple(labels.shape)}."
            )
        self.images = images
        self.labels = labels.long()
        self.train = bool(train)
        self.class_names = None if class_names is None else list(class_names)

    @classmethod
    def from_dataset(
        cls,
        split: Any,
        data_config: Mapping[str, Any],
        *,
        train: bool,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        name: str = "split",
        batch_size: int = 256,
    ) -> "InMemoryImages":
        """Decode ``split`` (a ``datasets.Dataset`` with ``image`` and ``label`` columns, as
        `load_image_dataset` makes) once, at ``data_config``'s input size.

        Each image is converted to RGB and given the CPU transform's deterministic steps: for ``train``, the
        resize keeping the aspect ratio and centre crop that `build_transforms` applies before its random crop;
        otherwise timm's evaluation transform up to ``ToTensor`` (so ``normalize_images`` of the result equals
        ``build_transforms(data_config, train=False)``). Raises before decoding anything when the uint8 tensor
        would take more than ``max_bytes`` (``None``: no limit); ``name`` names the split in messages.
        """
        missing = [c for c in ("image", "label") if c not in getattr(split, "column_names", ())]
        if missing:
            raise ValueError(
                f"{name} lacks columns {missing} (it has {getattr(split, 'column_names', None)}); pass a "
                "datasets.Dataset loaded with load_image_dataset, which names them 'image' and 'label'."
            )
        steps, _ = _deterministic_steps(data_config, train=train)
        height, width = _check_config(data_config)
        count = len(split)
        needed = in_memory_bytes(count, data_config)
        if max_bytes is not None and needed > max_bytes:
            raise ValueError(
                f"{name}: {count:,} images at 3x{height}x{width} need {_size(needed)} as uint8, above "
                f"max_bytes={_size(max_bytes)}. Raise max_bytes (in the recipes, --in_memory_max_gib) if "
                "the machine has the memory (each training process holds its own copy), or use the CPU transforms "
                "(apply_transforms; in the recipes, --in_memory_data false)."
            )
        resize = T.Compose(steps)
        images = torch.empty((count, 3, height, width), dtype=torch.uint8)
        labels = torch.empty(count, dtype=torch.long)
        start = 0
        for batch in _batches(split, batch_size):
            for offset, (image, label) in enumerate(zip(batch["image"], batch["label"])):
                pixels = np.array(resize(to_rgb(image)), dtype=np.uint8)  # a writable copy
                if pixels.shape != (height, width, 3):
                    raise ValueError(
                        f"{name}: image {start + offset} came out {pixels.shape[:2]} after the resize, not "
                        f"({height}, {width}); the data config's crop settings do not give the input size."
                    )
                images[start + offset] = torch.from_numpy(pixels).permute(2, 0, 1)
                labels[start + offset] = int(label)
            start += len(batch["label"])
        feature = getattr(split, "features", {}).get("label")
        return cls(images, labels, train=train, class_names=getattr(feature, "names", None))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": self.images[index], "labels": int(self.labels[index]), "index": int(index)}

    @property
    def nbytes(self) -> int:
        """Bytes the images take."""
        return self.images.numel()

    def __repr__(self) -> str:
        n, _, h, w = self.images.shape
        kind = "train" if self.train else "eval"
        return f"InMemoryImages({n} images, 3x{h}x{w} uint8, {kind} decoding, {_size(self.nbytes)})"


def _batches(split: Any, batch_size: int) -> Iterable[Mapping[str, list]]:
    if hasattr(split, "iter"):  # datasets.Dataset: columnar batches, decoded per batch
        yield from split.iter(batch_size=batch_size)
        return
    for start in range(0, len(split), batch_size):
        yield split[start : start + batch_size]


def in_memory_datasets(
    dataset_dict: Mapping[str, Any], data_config: Mapping[str, Any], *, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> dict[str, InMemoryImages]:
    """`InMemoryImages` for every split, as `apply_transforms` sets transforms: ``train`` with the training
    decoding, every other split with the evaluation one. ``max_bytes`` bounds each split and all together."""
    total = sum(in_memory_bytes(len(split), data_config) for split in dataset_dict.values())
    if max_bytes is not None and total > max_bytes:
        sizes = ", ".join(f"{name} {len(split):,}" for name, split in dataset_dict.items())
        raise ValueError(
            f"The splits ({sizes} images) need {_size(total)} as uint8 at input_size "
            f"{tuple(data_config['input_size'])}, above max_bytes={_size(max_bytes)}. Raise max_bytes (in "
            "the recipes, --in_memory_max_gib) if the machine has the memory (each training process holds its own "
            "copy), or use the CPU transforms (apply_transforms; in the recipes, --in_memory_data false)."
        )
    return {
        name: InMemoryImages.from_dataset(
            split, data_config, train=name == "train", max_bytes=max_bytes, name=f"split {name!r}"
        )
        for name, split in dataset_dict.items()
    }


def collate_images(examples: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack examples into ``{"images": uint8 (B, 3, H, W), "labels": LongTensor (B,)}``, and ``"index"`` (each
    image's row in its split, what a teacher-logit cache is looked up by) when the examples carry it."""
    batch = {
        "images": torch.stack([e["images"] for e in examples]),
        "labels": torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long),
    }
    if all("index" in e for e in examples):
        batch["index"] = torch.tensor([int(e["index"]) for e in examples], dtype=torch.long)
    return batch


def _check_images(images: Any, argument: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"{argument} must be a uint8 batch (B, 3, H, W) of pixel values 0..255 (InMemoryImages + "
            f"collate_images), got {got}; a float batch that is already normalised goes to the model as "
            "pixel_values as it is."
        )
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{argument} must have shape (B, 3, H, W), got {tuple(images.shape)}.")


def augmentation_outcomes(padding: int) -> int:
    """How many distinct inputs the random crop (zero padding ``padding``) and flip make of one image:
    ``(2 * padding + 1) ** 2`` offsets times 2 flips (162 for the CIFAR recipe's padding 4)."""
    return (2 * padding + 1) ** 2 * 2


def crop_flip(images: torch.Tensor, padding: int, outcome: torch.Tensor) -> torch.Tensor:
    """The crop (zero padding ``padding``) and flip numbered ``outcome[b]`` of each sample of a uint8 batch
    ``(B, 3, H, W)``, in one gather on the batch's device: outcome ``o`` is row offset ``o // (2 * side)``, column
    offset ``(o // 2) % side`` and a flip when ``o`` is odd (``side = 2 * padding + 1``). Returns uint8."""
    _check_images(images)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}.")
    batch, channels, height, width = images.shape
    device, side = images.device, 2 * padding + 1
    outcome = outcome.to(device)
    dy, dx, flip = outcome // (2 * side), (outcome // 2) % side, (outcome % 2).bool()
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = dy[:, None] + torch.arange(height, device=device)  # (B, H) rows of the padded image
    columns = torch.arange(width, device=device)
    # The flip after the crop: output column j is crop column W - 1 - j.
    columns = dx[:, None] + torch.where(flip[:, None], width - 1 - columns, columns)  # (B, W)
    index_b = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    index_c = torch.arange(channels, device=device).view(1, channels, 1, 1)
    return padded[index_b, index_c, rows[:, None, :, None], columns[:, None, None, :]]


def random_crop_flip(
    images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None, *, return_outcomes: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``RandomCrop((H, W), padding=padding)`` (zero padding) then ``RandomHorizontalFlip()`` for every sample of
    a uint8 batch ``(B, 3, H, W)``, independently, on the batch's device: each sample takes one of the
    `augmentation_outcomes` uniformly (a single ``randint`` over them, from ``generator`` when given, which must
    live on the batch's device) and `crop_flip` makes it. Returns uint8, and with ``return_outcomes`` the outcome
    numbers ``(B,)`` too (what a teacher-logit cache is looked up by)."""
    _check_images(images)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}.")
    outcome = torch.randint(0, augmentation_outcomes(padding), (images.shape[0],), device=images.device,
                            generator=generator)
    augmented = crop_flip(images, padding, outcome)
    return (augmented, outcome) if return_outcomes else augmented


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``ToTensor`` then ``Normalize(mean, std)`` on a uint8 batch ``(B, 3, H, W)``: float32
    ``(images / 255 - mean) / std``, with torchvision's operations in its order (so the values equal the CPU
    transform's)."""
    _check_images(images)
    return TF.normalize(images.to(torch.float32).div(255), list(mean), list(std))


@dataclass(frozen=True)
class BatchAugmentation:
    """uint8 batches -> normalised float ``pixel_values`` on the batch's device.

    Training (``train=True``): `random_crop_flip` with ``padding`` (the CIFAR recipe's random part), then
    `normalize_images`. Evaluation: `normalize_images` only. ``size`` ``(H, W)``, when set, is checked against
    every batch (a batch decoded for another model's input size is refused). ``padding`` is ``None`` for a
    model whose training recipe is not the small-input one (``input_size`` above ``SMALL_INPUT_MAX``): such a
    model's batches can be normalised for evaluation but not augmented for training.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    padding: int | None = 4
    size: tuple[int, int] | None = None

    @classmethod
    def from_data_config(cls, data_config: Mapping[str, Any]) -> "BatchAugmentation":
        """The augmentation of ``data_config`` (``timm.data.resolve_data_config(model=...)``): its mean, std and
        input size, and the padding of `build_transforms`' training crop."""
        height, width = _check_config(data_config)
        padding = None
        if max(height, width) <= SMALL_INPUT_MAX:
            _, padding = _deterministic_steps(data_config, train=True)
        mean, std = (tuple(float(v) for v in data_config[key]) for key in ("mean", "std"))
        return cls(mean=mean, std=std, padding=padding, size=(height, width))

    def check(self, images: torch.Tensor) -> None:
        """Raise unless ``images`` is a uint8 ``(B, 3, H, W)`` batch at ``size``."""
        _check_images(images)
        if self.size is not None and tuple(images.shape[-2:]) != tuple(self.size):
            raise ValueError(
                f"The images are {tuple(images.shape[-2:])} but the model takes {tuple(self.size)} (its "
                "pretrained_cfg input_size); decode the split with the model's data config: "
                "InMemoryImages.from_dataset(split, timm.data.resolve_data_config(model=model), ...)."
            )

    def __call__(
        self, images: torch.Tensor, *, train: bool, generator: torch.Generator | None = None,
        return_outcomes: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised ``pixel_values`` of a uint8 batch, augmented when ``train``; with ``return_outcomes`` also the
        outcome number of each sample's crop and flip (``None`` in evaluation)."""
        self.check(images)
        if not train:
            pixels = normalize_images(images, self.mean, self.std)
            return (pixels, None) if return_outcomes else pixels
        if self.padding is None:
            raise ValueError(
                f"Device augmentation implements the small-input (CIFAR) training recipe, for inputs up to "
                f"{SMALL_INPUT_MAX} px; this model takes {self.size}, whose training transform is timm's "
                "random-resized crop. Train it with the CPU transforms (apply_transforms, "
                "device_augmentation=False; in the recipes, --in_memory_data false)."
            )
        images, outcomes = random_crop_flip(images, self.padding, generator, return_outcomes=True)
        pixels = normalize_images(images, self.mean, self.std)
        return (pixels, outcomes) if return_outcomes else pixels
