"""Long-tailed image-classification data: sources, the long-tailed split, the benchmarks' published splits
(manifests), transforms and collate, and the in-memory uint8 dataset with its batched on-device augmentation."""

from .columns import detect_columns
from .in_memory import (
    DEFAULT_MAX_BYTES,
    BatchAugmentation,
    InMemoryImages,
    collate_images,
    in_memory_bytes,
    in_memory_datasets,
    normalize_images,
    random_crop_flip,
)
from .image_splits import ImageSplits
from .long_tail import get_class_counts, hold_out_validation, long_tailed_counts, make_long_tailed
from .manifest import load_split_manifest
from .sources import load_held_out_split, load_image_dataset
from .split_info import SplitInfo
from .verify import shared_images, verify_images
from .transforms import (
    ImageClassificationTransform,
    NormalizationConverter,
    apply_transforms,
    build_transforms,
    collate_fn,
    normalization_converter,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BatchAugmentation",
    "ImageSplits",
    "InMemoryImages",
    "SplitInfo",
    "ImageClassificationTransform",
    "NormalizationConverter",
    "apply_transforms",
    "build_transforms",
    "collate_fn",
    "collate_images",
    "detect_columns",
    "get_class_counts",
    "hold_out_validation",
    "in_memory_bytes",
    "in_memory_datasets",
    "load_held_out_split",
    "load_image_dataset",
    "load_split_manifest",
    "long_tailed_counts",
    "make_long_tailed",
    "normalization_converter",
    "normalize_images",
    "random_crop_flip",
    "shared_images",
    "verify_images",
]
