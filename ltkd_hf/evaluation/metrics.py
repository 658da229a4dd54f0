"""Top-1 accuracy overall, per class and per frequency group, and the teacher's group probability mass.

Plain numpy on predicted class indices (the argmax of the logits) and reference labels, so the same
numbers come out of the trainer's ``compute_metrics``, the ``evaluate`` module and the recipes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..groups import ClassGroups

__all__ = ["top1_accuracy", "group_accuracy", "per_class_accuracy", "evaluation_report", "group_mass"]


def _as_labels(values: Any, name: str, num_classes: int | None) -> np.ndarray:
    """``values`` as a 1-D int64 array of class indices in ``0..num_classes-1``, or a ValueError for a person."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D sequence of class indices, got an array of shape {array.shape}; "
            f"for logits pass their argmax over the last axis."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty; accuracy needs at least one sample.")
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer class indices, got dtype {array.dtype} (first values {array[:5].tolist()}); "
            f"for logits or probabilities pass their argmax."
        )
    upper = num_classes if num_classes is not None else np.iinfo(np.int64).max
    bad = array[(array < 0) | (array >= upper)]
    if bad.size:
        expected = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
        raise ValueError(
            f"{name} holds class indices {sorted(set(bad.tolist()))[:10]} outside {expected}; "
            f"check that the model's classes match the dataset's."
        )
    return array.astype(np.int64)


def _check_pair(predictions: Any, references: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    preds = _as_labels(predictions, "predictions", num_classes)
    refs = _as_labels(references, "references", num_classes)
    if preds.shape != refs.shape:
        raise ValueError(
            f"predictions and references must have the same length, got {preds.size} predictions and "
            f"{refs.size} references."
        )
    return preds, refs


def top1_accuracy(predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the reference label."""
    preds, refs = _check_pair(predictions, references, None)
    return float(np.mean(preds == refs))


def group_accuracy(
    predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray, groups: ClassGroups
) -> dict[str, float]:
    """Overall top-1 and per-group top-1 accuracy.

    Returns ``{"accuracy": overall, "accuracy_<name>": ...}`` with one entry per group name. A group's
    accuracy is the mean correctness over the test samples whose *label* belongs to that group (the
    long-tail literature's per-group top-1); on a balanced test set it equals the mean of the group's
    per-class accuracies. A group with no test sample gets ``nan``.
    """
    preds, refs = _check_pair(predictions, references, groups.num_classes)
    correct = preds == refs
    label_group = np.asarray(groups.class_to_group, dtype=np.int64)[refs]
    out = {"accuracy": float(correct.mean())}
    for g, name in enumerate(groups.names):
        in_group = label_group == g
        out[f"accuracy_{name}"] = float(correct[in_group].mean()) if in_group.any() else math.nan
    return out


def per_class_accuracy(
    predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Top-1 accuracy of each class over its test samples, shape ``(num_classes,)``; ``nan`` for a class
    absent from ``references``."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    preds, refs = _check_pair(predictions, references, int(num_classes))
    totals = np.bincount(refs, minlength=num_classes)
    hits = np.bincount(refs[preds == refs], minlength=num_classes)
    return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN: a group or class without test samples is reported as null.
    return float(value) if math.isfinite(value) else None


def evaluation_report(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    *,
    class_counts: Sequence[int],
    num_groups: int = 3,
    many: int = 100,
    few: int = 20,
) -> dict[str, Any]:
    """The full, JSON-serialisable accuracy report of one model on a test split.

    Keys: ``accuracy`` (overall top-1); ``accuracy_<name>`` for the paper's frequency groups
    (``ClassGroups.from_counts(class_counts, num_groups)``: head / medium / tail for K = 3);
    ``threshold_accuracy`` with ``accuracy_many`` / ``accuracy_medium`` / ``accuracy_few``
    (``ClassGroups.by_threshold(class_counts, many, few)``: more than ``many``, ``few``..``many``, fewer than
    ``few`` training images); ``per_class`` (one accuracy per class, ``None`` where the class has no test
    sample); ``num_samples``; ``class_counts``; and the group definitions ``groups`` and
    ``threshold_groups`` (``ClassGroups.to_dict()`` plus ``sizes``; the thresholds too). Accuracies are
    fractions in [0, 1]; a group without test samples is ``None``.
    """
    paper = ClassGroups.from_counts(class_counts, num_groups)
    threshold = ClassGroups.by_threshold(class_counts, many=many, few=few)
    report: dict[str, Any] = {
        k: _finite_or_none(v) for k, v in group_accuracy(predictions, references, paper).items()
    }
    report["threshold_accuracy"] = {
        k: _finite_or_none(v)
        for k, v in group_accuracy(predictions, references, threshold).items()
        if k != "accuracy"
    }
    report["per_class"] = [
        _finite_or_none(v) for v in per_class_accuracy(predictions, references, paper.num_classes).tolist()
    ]
    report["num_samples"] = int(np.asarray(references).size)
    report["class_counts"] = [int(c) for c in class_counts]
    report["groups"] = {**paper.to_dict(), "sizes": paper.sizes}
    report["threshold_groups"] = {**threshold.to_dict(), "sizes": threshold.sizes, "many": many, "few": few}
    return report


def group_mass(
    probabilities: Sequence[Sequence[float]] | np.ndarray, groups: ClassGroups, *, batch_size: int | None = None
) -> np.ndarray:
    """The probability mass a model puts on each group, averaged over samples, shape ``(K,)``.

    This is the teacher-bias statistic of the paper's Fig. 3: on a balanced test set an unbiased model
    puts about ``group size / C`` on each group. ``probabilities`` is ``(N, C)``, each row a softmax.
    With ``batch_size`` the result is the expected sum over a batch of that many samples (the mean times
    ``batch_size``), the scale the paper prints (``batch_size=64``: [27.88, 19.28, 16.83] on CIFAR-100-LT).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] != groups.num_classes:
        raise ValueError(
            f"probabilities must be an (N, C) array with N >= 1 and C = {groups.num_classes} (the number of "
            f"classes in groups), got shape {probs.shape}."
        )
    row_sums = probs.sum(axis=1)
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not np.allclose(row_sums, 1.0, atol=1e-3):
        raise ValueError(
            f"probabilities must be finite, non-negative rows that sum to 1 (row sums seen: "
            f"{row_sums[:5].round(4).tolist()}); pass softmax(logits / T), not logits."
        )
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    one_hot = np.eye(groups.num_groups)[np.asarray(groups.class_to_group)]  # (C, K)
    mass = (probs @ one_hot).mean(axis=0)
    return mass * batch_size if batch_size is not None else mass
