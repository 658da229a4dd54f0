"""``SplitInfo``: what a long-tailed training split is — its classes, their counts and how it was made.

The one record of these facts: ``load_image_dataset`` and ``load_split_manifest`` make it (``ImageSplits.split_info``),
``ImageSplits.long_tailed`` and ``ImageSplits.hold_out_validation`` update it, and the trainer, given it as
``split_info``, records it in every saved folder and renders it in the report and the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from datasets import Dataset

from ..groups import ClassGroups
from .long_tail import get_class_counts

__all__ = ["SplitInfo"]


@dataclass(frozen=True)
class SplitInfo:
    """The training split's classes and construction.

    Attributes:
        class_counts: training images per class, class-index order.
        label_names: class names, class-index order.
        source: the ``load_image_dataset`` source (Hub id, folder, ``builtin:...``), when known.
        source_kind: ``"hub"``, ``"local"`` or ``"builtin"``, when known.
        train_split, test_split: the source's own names of the training and held-out splits.
        validation_holdout: ``{"per_class", "seed"}`` when a balanced validation split was held out of the
            training rows before the long-tailed construction (``hold_out_validation``), else ``None``.
        fingerprint: what the source's content is (its files' names, sizes and modification times, or the
            ``datasets`` fingerprints of a Hub dataset), so that an edited dataset is never taken for the same one.
        long_tail: how ``make_long_tailed`` built the split (``imbalance_factor``, ``seed``, ``profile``,
            ``exponent``, ``class_order_seed``), or ``None`` when the training rows are used as they are.
    """

    class_counts: tuple[int, ...]
    label_names: tuple[str, ...]
    source: str | None = None
    source_kind: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    long_tail: dict[str, Any] | None = None
    fingerprint: str | None = None
    validation_holdout: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_counts", tuple(int(c) for c in self.class_counts))
        object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        if not self.class_counts or len(self.label_names) != len(self.class_counts):
            raise ValueError(
                f"SplitInfo needs one label name per class: {len(self.class_counts)} class counts, "
                f"{len(self.label_names)} label names."
            )

    @classmethod
    def from_counts(cls, class_counts: Sequence[int], label_names: Sequence[str] | None = None) -> "SplitInfo":
        """A split known only by its counts (names ``"0"``, ``"1"``, ... when none are given)."""
        names = [str(i) for i in range(len(class_counts))] if label_names is None else label_names
        return cls(tuple(class_counts), tuple(names))

    @classmethod
    def from_dataset(cls, train: Dataset, label_column: str = "label") -> "SplitInfo":
        """The classes and counts of a ``datasets.Dataset``'s rows; where they came from and how the split was made
        are not in the rows: ``ImageSplits.split_info`` records them."""
        feature = train.features.get(label_column)
        if feature is None or not hasattr(feature, "names"):
            raise ValueError(
                f"train_dataset's {label_column!r} column must be a datasets.ClassLabel with class names "
                f"(it has {train.features}); load it with ltkd_hf.data.load_image_dataset."
            )
        return cls(tuple(get_class_counts(train, label_column)), tuple(feature.names))

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def hub_dataset_id(self) -> str | None:
        """The Hub dataset id, only when the data came from the Hub."""
        return self.source if self.source_kind == "hub" else None

    def groups(self, num_groups: int = 3) -> ClassGroups:
        """The ``num_groups`` frequency groups of these classes (head / medium / tail for 3)."""
        return ClassGroups.from_counts(self.class_counts, num_groups)

    @property
    def published_source(self) -> str | None:
        """The source as a card or report may publish it: a local folder (or a manifest's) by its name, never the
        machine's path (config.json keeps the path, with the files' fingerprint, for the run's own checks)."""
        if self.source and self.source_kind in ("local", "manifest"):
            return Path(self.source).name
        return self.source

    def describe(self) -> str:
        """How the training split was made, in one line (the formula actually used)."""
        if self.long_tail is None and self.source_kind == "manifest":
            return f"the published long-tailed split {self.train_split} (its own class counts, no subsampling)"
        if self.long_tail is None and self.source_kind is None:
            return "not recorded (the trainer got class counts or a dataset, not the split's split_info)"
        if self.long_tail is None:
            return "the training split as it is (no long-tailed subsampling)"
        lt = self.long_tail
        rho = lt["imbalance_factor"]
        held, kept = "", "every training image kept"
        if self.validation_holdout:
            per_class = self.validation_holdout["per_class"]
            held = (f"; first {per_class} image{'' if per_class == 1 else 's'} per class held out as a balanced "
                    f"validation split (seed {self.validation_holdout['seed']})")
            kept = "every training image not held out kept"
        # the counts as they came out: on a source whose classes are unequal the formula's rho is not n_max / n_min
        high, low = max(self.class_counts), min(self.class_counts)
        spread = f"{high} to {low} images per class (n_max / n_min {high / max(low, 1):.3g})"
        if rho == 1:  # every n_c = N_c: no class is made the head, whatever the formula or the class order
            return f"{kept} (imbalance factor 1: the source's own class counts, {spread}){held}"
        if lt["profile"] == "step":
            formula = f"step profile: the first C // 2 classes keep all images, the others n_c / {rho:g}"
        else:
            exponent = "c / (C - 1)" if lt["exponent"] == "standard" else "c / C"
            formula = f"n_c = int(N_c * {rho:g}^(-{exponent}))"
        if lt.get("class_order_seed") is not None:
            order = f"frequency ranks drawn with class_order_seed {lt['class_order_seed']}"
        elif self.class_counts[0] == high:
            order = "class 0 is the head"
        else:
            head = self.class_counts.index(high)
            order = (f"the formula favours class 0, but the source's unequal counts make class {head} "
                     f"({self.label_names[head]}) the largest")
        return (
            f"{formula}, imbalance factor {rho:g}, {order}; rows chosen LDAM-DRW style with LT seed {lt['seed']} "
            f"(each class's indices shuffled in class order, the first n_c kept): {spread}{held}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_counts"], data["label_names"] = list(self.class_counts), list(self.label_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SplitInfo":
        return cls(**data)
