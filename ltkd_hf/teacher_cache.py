"""An exact cache of a frozen teacher's logits over the training augmentation's finite set of outcomes.

The small-input (CIFAR) recipe's random part, a crop of the 4-pixel zero-padded image and a horizontal flip, makes
9 x 9 x 2 = 162 distinct inputs of each training image (`ltkd_hf.data.augmentation_outcomes`). The teacher is
frozen, so its logits for every (image, outcome) pair are computed once, in large evaluation batches, and every
distillation run that draws outcome ``o`` for image ``i`` reads row ``[i, o]`` instead of running the teacher: the
same numbers as the online teacher on the same augmented input (up to the float rounding of another batch size).

The logits are float32 in ``logits.npy`` (``(N, outcomes, C)``), memory-mapped read-only, so the processes of a
run on one machine share one copy through the page cache; ``key.json`` beside it records what they are the logits
of: the teacher's weights, the training images' pixels, the augmentation and the teacher's input conversion. A
cache whose key differs from the run's is rebuilt, never used. Never top-k: LTKD's rebalancing needs the whole
distribution, its tail mass included.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.in_memory import BatchAugmentation, InMemoryImages, augmentation_outcomes, crop_flip, normalize_images

__all__ = ["LOGITS_NAME", "KEY_NAME", "TeacherLogitCache", "cache_key", "check_cacheable", "tensor_fingerprint"]

logger = logging.getLogger(__name__)

LOGITS_NAME = "logits.npy"
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


def cache_key(
    teacher: torch.nn.Module, images: InMemoryImages, augmentation: BatchAugmentation, teacher_input: Any
) -> dict[str, Any]:
    """What a cache holds the logits of: the teacher's weights (and buffers), the training images' pixels and
    order, the augmentation (padding, size, normalisation) and ``teacher_input`` (a description of the
    conversion from the student's inputs to the teacher's: the two models' mean, std and input size)."""
    check_cacheable(augmentation)
    return {
        "teacher": tensor_fingerprint(teacher.state_dict()),
        "images": tensor_fingerprint({"images": images.images, "labels": images.labels}),
        "num_images": len(images),
        "augmentation": {"padding": augmentation.padding, "size": list(augmentation.size or ()),
                         "mean": list(augmentation.mean), "std": list(augmentation.std)},
        "outcomes": augmentation_outcomes(augmentation.padding),
        "teacher_input": json.loads(json.dumps(teacher_input, default=str)),
        "dtype": "float32",
    }


class TeacherLogitCache:
    """The teacher's float32 logits for every (training image, augmentation outcome), memory-mapped."""

    def __init__(self, folder: str | os.PathLike, key: dict[str, Any], logits: np.ndarray) -> None:
        self.folder, self.key, self.logits = Path(folder), key, logits

    @classmethod
    def open(cls, folder: str | os.PathLike, key: dict[str, Any]) -> "TeacherLogitCache | None":
        """The cache in ``folder`` when its recorded key equals ``key``; ``None`` when there is none or it differs
        (the differing entries are logged)."""
        folder = Path(folder)
        if not (folder / KEY_NAME).is_file() or not (folder / LOGITS_NAME).is_file():
            return None
        recorded = json.loads((folder / KEY_NAME).read_text())
        if recorded != key:
            differing = sorted(k for k in set(recorded) | set(key) if recorded.get(k) != key.get(k))
            logger.info("The teacher-logit cache in %s was made for another %s: rebuilding it.", folder,
                        ", ".join(differing))
            return None
        return cls(folder, key, np.load(folder / LOGITS_NAME, mmap_mode="r"))

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike,
        key: dict[str, Any],
        images: InMemoryImages,
        augmentation: BatchAugmentation,
        teacher_logits: Callable[[torch.Tensor], torch.Tensor],
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 512,
        progress: bool = True,
    ) -> "TeacherLogitCache":
        """Compute ``teacher_logits`` (the student's normalised ``pixel_values`` -> float32 logits; the trainer's
        frozen teacher with its input conversion) for every image and outcome, in evaluation batches of
        ``batch_size``, and write them to ``folder`` (the key last: an interrupted build leaves no usable cache);
        ``progress`` shows a progress bar."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / KEY_NAME).unlink(missing_ok=True)
        outcomes, count = key["outcomes"], len(images)
        partial = folder / f".{LOGITS_NAME}.partial"
        logits = None
        # (image, outcome) pairs in row-major order, so each batch fills a contiguous stretch of the file
        with tqdm(total=count * outcomes, desc="teacher-logit cache", unit="input", disable=not progress) as bar:
            for start in range(0, count * outcomes, batch_size):
                pair = torch.arange(start, min(start + batch_size, count * outcomes))
                chunk = images.images[pair // outcomes].to(device)
                pixels = normalize_images(crop_flip(chunk, augmentation.padding, pair % outcomes),
                                          augmentation.mean, augmentation.std)
                values = teacher_logits(pixels).float().cpu().numpy()
                if logits is None:
                    logits = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32,
                                                       shape=(count, outcomes, values.shape[1]))
                logits.reshape(count * outcomes, -1)[start : start + len(pair)] = values
                bar.update(len(pair))
        logits.flush()
        del logits
        os.replace(partial, folder / LOGITS_NAME)
        tmp = folder / f".{KEY_NAME}.partial"
        tmp.write_text(json.dumps(key, indent=1, sort_keys=True))
        os.replace(tmp, folder / KEY_NAME)
        return cls(folder, key, np.load(folder / LOGITS_NAME, mmap_mode="r"))

    def lookup(self, index: torch.Tensor, outcome: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """The cached float32 logits ``(B, C)`` of images ``index`` under augmentation outcomes ``outcome``."""
        rows = self.logits[index.cpu().numpy(), outcome.cpu().numpy()]
        return torch.from_numpy(np.ascontiguousarray(rows)).to(device if device is not None else index.device)

    def __repr__(self) -> str:
        n, outcomes, classes = self.logits.shape
        return f"TeacherLogitCache({self.folder}, {n} images x {outcomes} outcomes x {classes} classes, float32)"
