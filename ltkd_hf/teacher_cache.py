"""An exact cache of a frozen teacher's logits over the training augmentation's finite set of outcomes, filled as
runs draw them.

The small-input (CIFAR) recipe's random part, a crop of the 4-pixel zero-padded image and a horizontal flip, makes
9 x 9 x 2 = 162 distinct inputs of each training image (`ltkd_hf.data.augmentation_outcomes`). The teacher is
frozen, so its logits for an (image, outcome) pair never change: the first run that draws outcome ``o`` of image
``i`` runs the teacher on it, as the online teacher would, and stores the logits in row ``[i, o]``; every later run
that draws the pair reads them instead. Runs of one seed draw the same pairs (the augmentation draws from the
generator ``args.seed`` seeds, and the logit losses draw nothing), so after a seed's first run its other runs (other
losses, other settings) never run the teacher; runs of other seeds fill the cache towards all 162 outcomes. The
cache never costs a teacher pass the online teacher would not have made.

The logits are float32 in ``logits.npy`` (``(N, outcomes, C)``) and ``filled.npy`` (``(N, outcomes)``, 1 where a row
holds logits) marks the filled rows; both are memory-mapped, so the processes of a run on one machine share one copy
through the page cache and see each other's rows. ``key.json`` beside them records what they are the logits of: the
teacher's weights, the training images' pixels, the augmentation and the teacher's input conversion. A cache whose
key differs from the run's is created anew, never used. Never top-k: LTKD's rebalancing needs the whole
distribution, its tail mass included.

A report's held-out split is not augmented (one outcome per image): its teacher logits get a cache of the same
kind in a subfolder, so the teacher's row in every report after the first (a table's cells) is read, not computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .data.in_memory import BatchAugmentation, InMemoryImages, augmentation_outcomes

__all__ = ["FILLED_NAME", "KEY_NAME", "LOGITS_NAME", "TeacherLogitCache", "cache_key", "check_cache_folder",
           "check_cacheable", "tensor_fingerprint"]

logger = logging.getLogger(__name__)

LOGITS_NAME = "logits.npy"
FILLED_NAME = "filled.npy"
KEY_NAME = "key.json"


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: their names, dtypes, shapes and bytes (a model's ``state_dict``, a uint8 split)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensors[name].shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:32]


def check_cacheable(augmentation: BatchAugmentation) -> None:
    """Raise unless ``augmentation`` has finitely many outcomes (the small-input recipe's padded crop and flip)."""
    if augmentation.padding is None:
        raise ValueError(
            "The training transform of this model is timm's random-resized crop of the original image, which has "
            "infinitely many outcomes, so its teacher logits cannot be cached exactly; train without the teacher "
            "cache (--teacher_cache false)."
        )


def check_cache_folder(folder: str | os.PathLike, world_size: int) -> None:
    """Raise unless a run of ``world_size`` processes can share a cache in ``folder``: its processes run on one
    machine (torchrun's and accelerate's ``LOCAL_WORLD_SIZE`` is the world size), and ``folder`` is no file."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size > local:
        raise ValueError(
            f"teacher_cache=True on {world_size // local} machines: the cache fills from memory-mapped writes that "
            "only one machine's page cache keeps coherent; run without it (--teacher_cache false), or on one machine."
        )
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(
            f"teacher_cache=True keeps the teacher's logits in the folder {folder}, which is a file; move or remove "
            "that file (or, in Python, pass another teacher_cache_dir)."
        )


def _damage(path: Path, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the ``.npy`` file at ``path`` for an array of leading dimensions ``shape``, or ``None``.
    A file shorter than its header promises must not be mapped for writing: numpy pads it with zeros, which would
    read back as filled rows of logits."""
    with open(path, "rb") as file:
        major, _ = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        dims, _, dtype = read_header(file)
        size, expected = os.fstat(file.fileno()).st_size, file.tell() + math.prod(dims) * dtype.itemsize
    if tuple(dims[: len(shape)]) != shape:
        return f"{path.name} holds an array of shape {dims}, not {shape}"
    if size < expected:
        return f"{path.name} holds {size} of its {expected} bytes"
    return None


def cache_key(
    teacher: torch.nn.Module,
    images: InMemoryImages,
    augmentation: BatchAugmentation,
    teacher_input: Any,
    *,
    precision: str = "no",
    evaluation: bool = False,
) -> dict[str, Any]:
    """What a cache holds the logits of: the teacher's weights (and buffers), the images' pixels and order, the
    augmentation (padding, size, normalisation), ``teacher_input`` (a description of the conversion from the
    student's inputs to the teacher's: the two models' mean, std and input size) and ``precision``, the autocast the
    teacher's forward runs under (accelerate's ``mixed_precision``: "no", "bf16", "fp16"; bf16 logits differ from
    float32 ones in the third digit). ``evaluation``: the logits of a held-out split, which is not augmented (one
    outcome per image, normalised only)."""
    if not evaluation:
        check_cacheable(augmentation)
    padding = None if evaluation else augmentation.padding
    return {
        "teacher": tensor_fingerprint(teacher.state_dict()),
        "images": tensor_fingerprint({"images": images.images, "labels": images.labels}),
        "num_images": len(images),
        "augmentation": {"padding": padding, "size": list(augmentation.size or ()),
                         "mean": list(augmentation.mean), "std": list(augmentation.std)},
        "outcomes": 1 if evaluation else augmentation_outcomes(padding),
        "teacher_input": json.loads(json.dumps(teacher_input, default=str)),
        "precision": precision,
        "dtype": "float32",
    }


class TeacherLogitCache:
    """The teacher's float32 logits for the (training image, augmentation outcome) pairs runs have drawn,
    memory-mapped; ``lookup`` runs the teacher on the pairs not yet filled and stores them."""

    def __init__(self, folder: str | os.PathLike, key: dict[str, Any], logits: np.ndarray, filled: np.ndarray) -> None:
        self.folder, self.key, self.logits, self.filled = Path(folder), key, logits, filled
        self.lookups = self.hits = 0  # rows asked for and rows answered from the cache, since opening

    @classmethod
    def open(cls, folder: str | os.PathLike, key: dict[str, Any]) -> "TeacherLogitCache | None":
        """The cache in ``folder`` when its recorded key equals ``key``; ``None`` when there is none or it differs
        (the differing entries are logged)."""
        folder = Path(folder)
        try:
            recorded = json.loads((folder / KEY_NAME).read_text())
            if recorded != key:
                differing = sorted(k for k in set(recorded) | set(key) if recorded.get(k) != key.get(k))
                logger.info("The teacher-logit cache in %s was made for another %s: creating it anew.", folder,
                            ", ".join(differing))
                return None
            shape = (key["num_images"], key["outcomes"])
            damage = _damage(folder / LOGITS_NAME, shape) or _damage(folder / FILLED_NAME, shape)
            if damage is not None:
                logger.warning("The teacher-logit cache in %s is damaged (%s): creating it anew.", folder, damage)
                return None
            logits = np.load(folder / LOGITS_NAME, mmap_mode="r+")
            filled = np.load(folder / FILLED_NAME, mmap_mode="r+")
            # Another run may have been creating a cache for another key meanwhile (it removes the key first, then
            # replaces the arrays): the arrays just opened are this key's only if the key is still there.
            if json.loads((folder / KEY_NAME).read_text()) != key:
                return None
        except (FileNotFoundError, ValueError, EOFError) as error:  # absent, unreadable, or replaced while read
            if (folder / KEY_NAME).is_file():  # not the first run's absent cache, nor another run's creation
                logger.warning("The teacher-logit cache in %s cannot be read (%s: %s): creating it anew.", folder,
                               type(error).__name__, error)
            return None
        return cls(folder, key, logits, filled)

    @classmethod
    def create(cls, folder: str | os.PathLike, key: dict[str, Any], num_classes: int) -> "TeacherLogitCache":
        """An empty cache in ``folder`` for ``key`` (the files are sparse: a row takes disk space once filled);
        the key is written last, so an interrupted creation leaves no usable cache."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / KEY_NAME).unlink(missing_ok=True)
        shape = (key["num_images"], key["outcomes"])
        for name, dtype, dims in ((LOGITS_NAME, np.float32, (*shape, num_classes)), (FILLED_NAME, np.uint8, shape)):
            partial = folder / f".{name}.partial"
            np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=dims).flush()
            os.replace(partial, folder / name)
        tmp = folder / f".{KEY_NAME}.partial"
        tmp.write_text(json.dumps(key, indent=1, sort_keys=True))
        os.replace(tmp, folder / KEY_NAME)
        return cls.open(folder, key)

    def lookup(
        self,
        index: torch.Tensor,
        outcome: torch.Tensor,
        pixel_values: torch.Tensor,
        teacher_logits: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The float32 logits ``(B, C)`` of images ``index`` under augmentation outcomes ``outcome``, on
        ``pixel_values``' device: read where filled; for the other rows ``teacher_logits`` (the trainer's frozen
        teacher with its input conversion) runs on those rows of ``pixel_values`` (the augmented batch) and the
        logits are stored, the filled mark after them."""
        rows, outcomes = index.cpu().numpy(), outcome.cpu().numpy()
        hit = self.filled[rows, outcomes].astype(bool)
        values = torch.from_numpy(self.logits[rows, outcomes]).to(pixel_values.device)  # a copy (fancy indexing)
        missing = np.flatnonzero(~hit)
        if len(missing):
            at = torch.from_numpy(missing).to(pixel_values.device)
            computed = teacher_logits(pixel_values[at]).float()
            values[at] = computed
            self.logits[rows[missing], outcomes[missing]] = computed.cpu().numpy()
            self.filled[rows[missing], outcomes[missing]] = 1
        self.lookups += len(rows)
        self.hits += len(rows) - len(missing)
        return values

    def filled_fraction(self) -> float:
        """The share of (image, outcome) rows that hold logits."""
        return float(np.count_nonzero(self.filled)) / self.filled.size

    def __repr__(self) -> str:
        n, outcomes, classes = self.logits.shape
        return (f"TeacherLogitCache({self.folder}, {n} images x {outcomes} outcomes x {classes} classes, float32, "
                f"{100 * self.filled_fraction():.1f}% filled)")
