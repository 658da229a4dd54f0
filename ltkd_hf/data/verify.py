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
    cannot be read, e.g. a truncated PNG, or that holds floating-point pixels (no fixed range to read as colour).
    ``split`` names the split in the message."""
    raw = dataset.cast_column(image_column, ImageFeature(decode=False)).select_columns([image_column])
    for start in tqdm(range(0, len(raw), _CHUNK), desc=f"verifying {split} images", leave=False, unit="chunk"):
        for offset, item in enumerate(raw[start : start + _CHUNK][image_column]):
            path, data = item.get("path"), item.get("bytes")
            try:
                with PIL.Image.open(io.BytesIO(data) if data else path) as image:
                    image.load()
                    mode = image.mode
            except (OSError, SyntaxError, ValueError) as err:
                raise ValueError(
                    f"The {split} split's image at {_where(path, start + offset)} cannot be decoded "
                    f"({type(err).__name__}: {err}). Replace or delete the file and run the command again."
                ) from err
            if mode == "F":
                raise ValueError(
                    f"The {split} split's image at {_where(path, start + offset)} holds floating-point pixels (PIL "
                    "mode F), which have no fixed range to read as 8-bit colour; save it as an 8- or 16-bit image."
                )


def _where(path: str | None, row: int) -> str:
    return f"file {path!r}" if path else f"row {row}"
