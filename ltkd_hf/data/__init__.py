"""Long-tailed image-classification data: sources, the long-tailed split, transforms and collate."""

from .columns import detect_columns
from .long_tail import get_class_counts, get_long_tail_info, long_tailed_counts, make_long_tailed
from .sources import load_image_dataset
from .split_info import SplitInfo
from .verify import verify_images
from .transforms import (
    ImageClassificationTransform,
    NormalizationConverter,
    apply_transforms,
    build_transforms,
    collate_fn,
    normalization_converter,
)

__all__ = [
    "SplitInfo",
    "ImageClassificationTransform",
    "NormalizationConverter",
    "apply_transforms",
    "build_transforms",
    "collate_fn",
    "detect_columns",
    "get_class_counts",
    "get_long_tail_info",
    "load_image_dataset",
    "long_tailed_counts",
    "make_long_tailed",
    "normalization_converter",
    "verify_images",
]
