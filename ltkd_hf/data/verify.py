"""Decode every image of a split before training, so a corrupt file stops the run at once, by its name."""

from __future__ import annotations

import io

import PIL.Image
from datasets import Dataset
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

__all__ = ["verify_images"]

_CHUNK = 512


def verify_images(dataset: Dataset, *, split: str = "train", image_column: str = "image") -> None:
    """Decode every image of ``dataset``; raise a ``ValueError`` naming the file (or row) of the first one that
    cannot be read, e.g. a truncated PNG. ``split`` names the split in the message."""
    raw = dataset.cast_column(image_column, ImageFeature(decode=False)).select_columns([image_column])
    for start in tqdm(range(0, len(raw), _CHUNK), desc=f"verifying {split} images", leave=False, unit="chunk"):
        for offset, item in enumerate(raw[start : start + _CHUNK][image_column]):
            path, data = item.get("path"), item.get("bytes")
            try:
                with PIL.Image.open(io.BytesIO(data) if data else path) as image:
                    image.load()
            except (OSError, SyntaxError, ValueError) as err:
                where = f"file {path!r}" if path else f"row {start + offset}"
                raise ValueError(
                    f"The {split} split's image at {where} cannot be decoded ({type(err).__name__}: {err}). "
                    "Replace or delete the file and run the command again (--verify_images false skips this check)."
                ) from err
