"""``ImageSplits``: a dataset's splits together with the one record of what its training split is."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from datasets import Dataset, DatasetDict

from .long_tail import hold_out_validation, make_long_tailed
from .split_info import SplitInfo

__all__ = ["ImageSplits"]


class ImageSplits(DatasetDict):
    """A ``DatasetDict`` ("train", "test", optionally "validation") and ``split_info``: the ``SplitInfo`` of its
    training split (counts, class names, where the rows came from, how the split was made).

    ``load_image_dataset`` and ``load_split_manifest`` return one; ``long_tailed`` and ``hold_out_validation``
    return a new one whose ``split_info`` records the step, so the trainer, the report and the card get the facts
    from ``split_info`` alone::

        splits = load_image_dataset("builtin:digits").long_tailed(imbalance_factor=20)
        DistillationTrainer(..., train_dataset=splits["train"], split_info=splits.split_info)

    ``DatasetDict`` methods (``map``, ``with_transform``, ...) return a plain ``DatasetDict``; keep the
    ``split_info`` of the ``ImageSplits`` they started from.
    """

    def __init__(self, splits: Mapping[str, Dataset], split_info: SplitInfo):
        super().__init__(splits)
        self.split_info = split_info

    def long_tailed(
        self,
        imbalance_factor: float,
        *,
        seed: int = 0,
        profile: str = "exp",
        exponent: str = "standard",
        class_order_seed: int | None = None,
    ) -> "ImageSplits":
        """These splits with the training split made long-tailed by ``make_long_tailed`` (same arguments); the
        held-out splits stay as they are."""
        train = make_long_tailed(self["train"], imbalance_factor, seed=seed, profile=profile, exponent=exponent,
                                 class_order_seed=class_order_seed)  # checks the arguments
        construction = {"imbalance_factor": float(imbalance_factor), "seed": int(seed), "profile": profile,
                        "exponent": exponent,
                        "class_order_seed": None if class_order_seed is None else int(class_order_seed)}
        return self._with_train(train, long_tail=construction)

    def hold_out_validation(self, per_class: int, *, seed: int = 0) -> "ImageSplits":
        """These splits with ``per_class`` training images of every class held out as a balanced "validation"
        split (``hold_out_validation``), before any long-tailed construction."""
        if "validation" in self:
            raise ValueError("these splits already have a validation split; hold none out of the training split.")
        rest, validation = hold_out_validation(self["train"], per_class, seed=seed)
        held = self._with_train(rest, validation_holdout={"per_class": per_class, "seed": int(seed)})
        held["validation"] = validation
        return held

    def _with_train(self, train: Dataset, **facts) -> "ImageSplits":
        counts = SplitInfo.from_dataset(train).class_counts
        info = replace(self.split_info, class_counts=counts, **facts)
        return ImageSplits({**self, "train": train}, info)
