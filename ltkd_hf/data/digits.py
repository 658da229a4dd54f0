"""The built-in offline demo ``builtin:digits``: scikit-learn's bundled 8x8 handwritten digits."""

from __future__ import annotations

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


def load_digits_dataset() -> DatasetDict:
    """Digits as 32x32 RGB images, labels ``"0".."9"``: a balanced ``test`` split of
    ``DIGITS_TEST_PER_CLASS`` images per class and the remaining 1,497 images as ``train``.

    The test images of class ``c`` are the first ``DIGITS_TEST_PER_CLASS`` of its row indices after
    ``np.random.RandomState(DIGITS_SPLIT_SEED).shuffle``, classes visited 0..9 with one generator.
    Both splits keep sklearn's row order.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    targets = bunch.target.astype(np.int64)
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    is_test = np.zeros(targets.size, dtype=bool)
    for c in range(10):
        rows = np.flatnonzero(targets == c)
        rng.shuffle(rows)
        is_test[rows[:DIGITS_TEST_PER_CLASS]] = True
    features = Features({"image": Image(), "label": ClassLabel(names=[str(c) for c in range(10)])})

    def split(mask: np.ndarray, name: str) -> Dataset:
        rows = np.flatnonzero(mask)
        encoded = features.encode_batch(
            {"image": [_to_image(bunch.data[r]) for r in rows], "label": targets[rows].tolist()}
        )
        table = InMemoryTable.from_pydict(encoded, schema=features.arrow_schema)
        # A fixed fingerprint: the data never changes, and hashing the Arrow table (what from_dict does) pickles
        # pyarrow types with dill, which fails on some pyarrow/dill/Python combinations.
        return Dataset(table, info=DatasetInfo(features=features), fingerprint=f"ltkd_hf-builtin-digits-{name}-v1")

    return DatasetDict(train=split(~is_test, "train"), test=split(is_test, "test"))
