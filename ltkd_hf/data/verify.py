"""Decode every image of a split before training, so a corrupt file stops the run at once, by its name; and find
the held-out images that are copies of training images, whose accuracy is not held out."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import PIL.Image
from datasets import Dataset
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

__all__ = ["image_path", "shared_images", "verify_images"]

_CHUNK = 512


def verify_images(dataset: Dataset, *, split: str = "train", image_column: str = "image") -> list[str]:
    """Decode every image of ``dataset``; raise a ``ValueError`` naming the file (or row) of the first one that
    cannot be read, e.g. a truncated PNG, or that holds floating-point pixels (no fixed range to read as colour).
    ``split`` names the split in the message. Returns each row's digest of its file's bytes (a file copied into
    two splits has one digest; hashing the pixels instead doubled the time on 500x375 JPEGs), for `shared_images`."""
    digests = []
    raw = _raw(dataset, image_column)
    for start in tqdm(range(0, len(raw), _CHUNK), desc=f"verifying {split} images", leave=False, unit="chunk"):
        for offset, item in enumerate(raw[start : start + _CHUNK][image_column]):
            path, data = item.get("path"), item.get("bytes")
            try:
                data = data or Path(path).read_bytes()
                with PIL.Image.open(io.BytesIO(data)) as image:
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
            digests.append(hashlib.blake2b(data, digest_size=16).hexdigest())
    return digests


def shared_images(held_out: list[str], train: list[str]) -> list[tuple[int, int]]:
    """The ``(held-out row, training row)`` pairs of identical image files, from `verify_images`' digests of the
    two splits (each held-out row once, with the first training row that shares its pixels)."""
    first: dict[str, int] = {}
    for row, digest in enumerate(train):
        first.setdefault(digest, row)
    return [(row, first[digest]) for row, digest in enumerate(held_out) if digest in first]


def image_path(dataset: Dataset, row: int, image_column: str = "image") -> str:
    """Where the image of ``row`` came from, for a message: its file, or its row when it has none."""
    return _where(_raw(dataset, image_column)[row][image_column].get("path"), row)


def _raw(dataset: Dataset, image_column: str) -> Dataset:
    return dataset.cast_column(image_column, ImageFeature(decode=False)).select_columns([image_column])


def _where(path: str | None, row: int) -> str:
    return f"file {path!r}" if path else f"row {row}"
