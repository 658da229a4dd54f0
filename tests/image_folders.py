"""A tiny image folder (``train/`` and ``test/``, one folder per class) that the recipe tests train on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_COUNTS = {"heron": 6, "kingfisher": 4, "osprey": 3}


def write_folder(root: Path, test_classes=tuple(TRAIN_COUNTS)) -> Path:
    """Random 32x32 PNGs: 6 / 4 / 3 training images per class, 2 test images for each of ``test_classes``."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", TRAIN_COUNTS), ("test", dict.fromkeys(test_classes, 2))):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root
