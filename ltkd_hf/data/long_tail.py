"""Long-tailed training splits: the per-class counts ``n_c = int(N_c * rho^(-c/(C-1)))`` and the LDAM-DRW row selection."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Sequence

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict

__all__ = ["long_tailed_counts", "make_long_tailed", "get_class_counts", "hold_out_validation"]

PROFILES = ("exp", "step")
EXPONENTS = ("standard", "paper")


def _check_params(imbalance_factor: float, profile: str, exponent: str) -> float:
    if (
        isinstance(imbalance_factor, bool)
        or not isinstance(imbalance_factor, numbers.Real)
        or not math.isfinite(imbalance_factor)
        or imbalance_factor < 1
    ):
        raise ValueError(
            "imbalance_factor must be a finite number >= 1 (rho = largest / smallest class count; "
            f"1 keeps every image), got {imbalance_factor!r}. The paper uses 10, 20 or 100 on CIFAR-100-LT."
        )
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}.")
    if exponent not in EXPONENTS:
        raise ValueError(
            f"exponent must be one of {EXPONENTS} ('standard' = rho^(-c/(C-1)), the LDAM-DRW totals; "
            f"'paper' = rho^(-c/C) as printed), got {exponent!r}."
        )
    return float(imbalance_factor)


def _check_source_counts(class_counts: Sequence[int]) -> np.ndarray:
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(
            "class_counts must list the image count of each of at least 2 classes, "
            f"got {np.asarray(class_counts).tolist()!r}."
        )
    if not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"class_counts must be integers, got dtype {counts.dtype}: {counts.tolist()[:10]}.")
    empty = np.flatnonzero(counts <= 0).tolist()
    if empty:
        raise ValueError(
            f"classes {empty[:20]} have no images (class_counts {counts.tolist()[:20]}...); a long-tailed split "
            "needs every class 0..C-1 present. Drop those classes and renumber the labels first."
        )
    return counts.astype(np.int64)


def _target_counts(
    counts: np.ndarray, rho: float, profile: str, exponent: str, rank: np.ndarray, names: Sequence[str] | None = None
) -> list[int]:
    """Kept images per class, class ``c`` sitting at frequency rank ``rank[c]`` (0 = head); ``names`` name the
    classes in the warning (else their indices)."""
    num_classes = counts.size
    denominator = num_classes - 1.0 if exponent == "standard" else float(num_classes)
    # Python floats and (1/rho)**(r/d), the LDAM-DRW expression, so that int() truncates exactly as there
    # (numpy's vectorised pow may differ in the last bit).
    factors = [
        (1.0 / rho) ** (r / denominator) if profile == "exp" else (1.0 if r < num_classes // 2 else 1.0 / rho)
        for r in rank.tolist()
    ]
    kept = [int(n * f) for n, f in zip(counts.tolist(), factors)]
    clamped = [c if names is None else names[c] for c, k in enumerate(kept) if k == 0]
    if clamped:
        warnings.warn(
            f"imbalance_factor={rho:g} leaves classes {clamped[:20]} with 0 images; each keeps 1 image instead "
            "(lower imbalance_factor to avoid this).",
            UserWarning,
            stacklevel=3,
        )
    return [max(k, 1) for k in kept]


def long_tailed_counts(
    class_counts: Sequence[int],
    imbalance_factor: float,
    *,
    profile: str = "exp",
    exponent: str = "standard",
) -> list[int]:
    """Per-class image counts of the long-tailed split, in class-index order (class 0 = head).

    ``profile="exp"``: ``n_c = int(class_counts[c] * rho ** (-c / (C - 1)))`` (``exponent="standard"``,
    the LDAM-DRW / Cui et al. construction) or ``rho ** (-c / C)`` (``exponent="paper"``, as printed).
    ``profile="step"``: the first ``C // 2`` classes keep their count, the others get ``int(n / rho)``
    (``exponent`` is ignored). A class that would get 0 images keeps 1, with a warning.
    """
    rho = _check_params(imbalance_factor, profile, exponent)
    counts = _check_source_counts(class_counts)
    return _target_counts(counts, rho, profile, exponent, np.arange(counts.size))


def _label_array(dataset: Dataset, label_column: str) -> np.ndarray:
    if not isinstance(dataset, Dataset):
        hint = " Pass one split, e.g. dataset['train']." if isinstance(dataset, DatasetDict) else ""
        raise ValueError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}.{hint}")
    if label_column not in dataset.column_names:
        raise ValueError(
            f"label_column={label_column!r} is not a column of the dataset (columns: {dataset.column_names}); "
            "pass label_column=<the column holding the class index>."
        )
    if len(dataset) == 0:
        raise ValueError("the dataset is empty (0 rows); a long-tailed split needs images of every class.")
    column = dataset.data.column(label_column)
    # A dataset made by select/shuffle/filter is the full Arrow table plus an indices mapping; Arrow's take
    # applies it in C. datasets' own column access through the mapping converts the indices to a Python
    # list (seconds at ImageNet scale, see benchmarks/long_tail_split.py).
    indices = getattr(dataset, "_indices", None)
    if indices is not None:
        column = column.take(indices.column(0))
    if not pa.types.is_integer(column.type) or column.null_count:
        kind = f"{column.null_count} missing" if pa.types.is_integer(column.type) else f"{column.type}"
        raise ValueError(
            f"label_column={label_column!r} holds {kind} values, expected integer class indices 0..C-1 on "
            "every row; encode it first, e.g. dataset.class_encode_column(label_column), and drop unlabelled "
            "rows."
        )
    return column.to_numpy()


def _num_classes(dataset: Dataset, label_column: str, labels: np.ndarray) -> int:
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        num_classes, origin = feature.num_classes, "the classes of its ClassLabel"
    else:
        num_classes, origin = int(labels.max()) + 1, "C = largest label + 1"
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"label_column={label_column!r} holds values {np.unique(bad)[:10].tolist()} outside "
            f"0..{num_classes - 1} ({origin}); unlabelled rows (-1) cannot go into a training split, "
            "filter them out first."
        )
    return num_classes


def make_long_tailed(
    dataset: Dataset,
    imbalance_factor: float,
    *,
    label_column: str = "label",
    seed: int = 0,
    profile: str = "exp",
    exponent: str = "standard",
    class_order_seed: int | None = None,
) -> Dataset:
    """The long-tailed subset of ``dataset`` built as LDAM-DRW builds CIFAR-LT.

    Class ``c`` keeps ``long_tailed_counts(...)[c]`` rows: with ``np.random.RandomState(seed)`` (the
    legacy ``np.random.seed(seed)`` stream), each class's row indices, in class-index order, are shuffled
    and the first ``n_c`` kept; rows come out class by class in that shuffled order.

    ``class_order_seed`` (``None`` = off) draws ``rank = np.random.RandomState(class_order_seed)
    .permutation(C)``; class ``c`` then gets the count of frequency rank ``rank[c]`` (rank 0 = head).
    Labels are not renamed, and the selection still visits classes in index order.

    ``ImageSplits.long_tailed`` calls it and records the construction in its ``split_info``.
    """
    rho = _check_params(imbalance_factor, profile, exponent)
    labels = _label_array(dataset, label_column)
    num_classes = _num_classes(dataset, label_column, labels)
    source_counts = _check_source_counts(np.bincount(labels, minlength=num_classes))
    rank = (
        np.arange(num_classes)
        if class_order_seed is None
        else np.random.RandomState(class_order_seed).permutation(num_classes)
    )
    names = getattr(dataset.features[label_column], "names", None)
    kept = _target_counts(source_counts, rho, profile, exponent, rank, names)

    # A stable argsort lists each class's rows in ascending order, exactly np.where(labels == c)[0].
    by_class = np.argsort(labels, kind="stable")
    starts = np.concatenate(([0], np.cumsum(source_counts)))
    rng = np.random.RandomState(seed)
    chosen = []
    for c in range(num_classes):
        rows = by_class[starts[c] : starts[c + 1]]
        rng.shuffle(rows)
        chosen.append(rows[: kept[c]])
    return dataset.select(np.concatenate(chosen))


def hold_out_validation(
    dataset: Dataset, per_class: int, *, seed: int = 0, label_column: str = "label"
) -> tuple[Dataset, Dataset]:
    """``(rest, validation)``: ``per_class`` rows of every class held out of ``dataset`` as a balanced validation
    split, before any long-tailed construction (so the rare classes keep their validation images). Each class's rows
    are shuffled with ``np.random.RandomState(seed)`` in class order and the first ``per_class`` held out. It changes
    the training split: ``ImageSplits.hold_out_validation`` records it (``SplitInfo.validation_holdout``)."""
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}.")
    labels = _label_array(dataset, label_column)
    num_classes = _num_classes(dataset, label_column, labels)
    counts = np.bincount(labels, minlength=num_classes)
    names = getattr(dataset.features[label_column], "names", None) or [str(c) for c in range(num_classes)]
    short = [f"{names[c]} ({counts[c]})" for c in range(num_classes) if counts[c] <= per_class]
    if short:
        raise ValueError(
            f"per_class={per_class}: classes {short[:10]} have no more than {per_class} training images (shown in "
            "brackets), so holding out a balanced validation split would leave them none to train on; lower it, or "
            "use a dataset with its own validation split."
        )
    by_class = np.argsort(labels, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    rng = np.random.RandomState(seed)
    held, kept = [], []
    for c in range(num_classes):
        rows = by_class[starts[c] : starts[c + 1]].copy()
        rng.shuffle(rows)
        held.append(rows[:per_class])
        kept.append(np.sort(rows[per_class:]))
    rest = dataset.select(np.sort(np.concatenate(kept)))
    return rest, dataset.select(np.concatenate(held))


def get_class_counts(dataset: Dataset, label_column: str = "label") -> list[int]:
    """Images per class, class-index order, counted from the labels."""
    labels = _label_array(dataset, label_column)
    return np.bincount(labels, minlength=_num_classes(dataset, label_column, labels)).tolist()
