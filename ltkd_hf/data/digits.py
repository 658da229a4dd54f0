"""The built-in offline demo ``builtin:digits``: scikit-learn's bundled 8x8 handwritten digits."""

from __future__ import annotations

import functools

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image
from datasets.table import InMemoryTable
from PIL import Image as PILImage

__all__ = ["DIGITS_TEST_PER_CLASS", "DIGITS_SPLIT_SEED", "load_digits_dataset"]

DIGITS_TEST_PER_CLASS = 30
DIGITS_SPLIT_SEED = 0
_SIZE = 32


def _to_image(pixels: np.ndarray) -> PILImage.Image:
    # sklearn stores ink as 0..16; scale to 0..255 and repeat each pixel 4x4 (nearest) to 32x32 RGB.
    gray = np.round(pixels.reshape(8, 8) * (255.0 / 16.0)).astype(np.uint8)
    return PILImage.fromarray(gray).resize((_SIZE, _SIZE), PILImage.NEAREST).convert("RGB")


def _features() -> Features:
    return Features({"image": Image(), "label": ClassLabel(names=[str(c) for c in range(10)])})


@functools.cache
def _encoded_splits() -> dict[str, InMemoryTable]:
    """The two splits' Arrow tables, PNG-encoded once per process: encoding the 1,797 images takes about a second,
    which every run (and every cell of ``ltkd-table``) paid again. Arrow tables are immutable, and each call of
    ``load_digits_dataset`` wraps them in new ``Dataset`` objects, so nothing one caller does reaches another."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    targets = bunch.target.astype(np.int64)
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    is_test = np.zeros(targets.size, dtype=bool)
    for c in range(10):
        rows = np.flatnonzero(targets == c)
        rng.shuffle(rows)
        is_test[rows[:DIGITS_TEST_PER_CLASS]] = True
    features = _features()

    def encode(mask: np.ndarray) -> InMemoryTable:
        rows = np.flatnonzero(mask)
        encoded = features.encode_batch(
            {"image": [_to_image(bunch.data[r]) for r in rows], "label": targets[rows].tolist()}
        )
        return InMemoryTable.from_pydict(encoded, schema=features.arrow_schema)

    return {"train": encode(~is_test), "test": encode(is_test)}


def load_digits_dataset() -> DatasetDict:
    """Digits as 32x32 RGB images, labels ``"0".."9"``: a balanced ``test`` split of
    ``DIGITS_TEST_PER_CLASS`` images per class and the remaining 1,497 images as ``train``.

    The test images of class ``c`` are the first ``DIGITS_TEST_PER_CLASS`` of its row indices after
    ``np.random.RandomState(DIGITS_SPLIT_SEED).shuffle``, classes visited 0..9 with one generator.
    Both splits keep sklearn's row order.
    """
    # A fixed fingerprint: the data never changes, and hashing the Arrow table (what from_dict does) pickles
    # pyarrow types with dill, which fails on some pyarrow/dill/Python combinations.
    return DatasetDict({
        name: Dataset(table, info=DatasetInfo(features=_features()), fingerprint=f"ltkd_hf-builtin-digits-{name}-v1")
        for name, table in _encoded_splits().items()
    })
