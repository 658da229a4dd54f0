"""Top-1 accuracy overall, per class and per frequency group, expected calibration error, and the
probability mass a model puts on each group.

Plain numpy on predicted class indices (the argmax of the logits), softmax probabilities and reference
labels, so the same numbers come out of the trainer's ``compute_metrics``, the ``evaluate`` module and the
recipes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..groups import ClassGroups

__all__ = [
    "ECE_BINS",
    "SHOT_GROUPS",
    "describe_test_split",
    "evaluation_report",
    "expected_calibration_error",
    "group_accuracy",
    "group_mass",
    "per_class_accuracy",
    "top1_accuracy",
]

ECE_BINS = 15
"""Confidence bins of the reports' expected calibration error (Guo et al., 2017)."""

SHOT_GROUPS = ("many", "medium", "few")
"""The threshold groups of the long-tail literature, most training images first; each model's report holds
``accuracy_<name>_shot`` for each."""


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


def _as_probabilities(values: Any, num_classes: int | None) -> np.ndarray:
    """``values`` as an ``(N, C)`` float array of softmax rows (float32 stays float32: the arrays can be large),
    or a ValueError for a person."""
    probs = np.asarray(values)
    if probs.dtype.kind != "f":
        probs = probs.astype(np.float64)
    width = "C >= 1" if num_classes is None else f"C = {num_classes} (the number of classes in groups)"
    if probs.ndim != 2 or 0 in probs.shape or (num_classes is not None and probs.shape[1] != num_classes):
        raise ValueError(f"probabilities must be an (N, C) array with N >= 1 and {width}, got shape {probs.shape}.")
    row_sums = probs.sum(axis=1, dtype=np.float64)
    # A NaN or inf anywhere makes its row sum non-finite, so the sums check finiteness without an (N, C) mask.
    if not np.all(np.isfinite(row_sums)) or probs.min() < 0 or not np.allclose(row_sums, 1.0, atol=1e-3):
        raise ValueError(
            f"probabilities must be finite, non-negative rows that sum to 1 (row sums seen: "
            f"{row_sums[:5].round(4).tolist()}); pass softmax(logits / T), not logits."
        )
    return probs


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


def describe_test_split(test_counts: Sequence[int] | None) -> str:
    """What a test split is, in words, from its images per class: ``"balanced, 30 images per class"``, or, where the
    classes have unequal numbers of test images, ``"not balanced: 1 to 7 images per class"`` (overall accuracy is
    over images, so the classes with more test images weigh more in it). ``""`` for ``None`` (not known)."""
    if test_counts is None or len(test_counts) == 0:
        return ""
    low, high = int(min(test_counts)), int(max(test_counts))
    if low == high:
        return f"balanced, {low} image{'' if low == 1 else 's'} per class"
    return f"not balanced: {low} to {high} images per class"


def expected_calibration_error(
    probabilities: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = 15
) -> float:
    """Expected calibration error of the top-label confidence (Guo et al., 2017), a fraction in [0, 1].

    Each sample's confidence is its largest probability and its prediction that class. Samples fall into
    ``bins`` equal-width confidence bins, bin ``m`` holding confidences in ``((m-1)/bins, m/bins]``, and
    ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|``: the sample-weighted gap between each bin's accuracy
    and its mean confidence. 0 is perfectly calibrated. ``probabilities`` is ``(N, C)``, each row a softmax;
    ``labels`` the ``N`` true classes.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer (15 in Guo et al., 2017), got {bins!r}.")
    probs = _as_probabilities(probabilities, None)
    refs = _as_labels(labels, "labels", probs.shape[1])
    if refs.size != probs.shape[0]:
        raise ValueError(
            f"probabilities and labels must have the same length, got {probs.shape[0]} rows and {refs.size} labels."
        )
    confidence = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == refs).astype(np.float64)
    # right=True puts a confidence equal to an edge in the bin it closes: Guo et al.'s ((m-1)/M, m/M].
    index = np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True)
    # |B_m| / N * |acc - conf| = |sum over B_m of (correct - confidence)| / N
    gaps = np.bincount(index, weights=correct - confidence, minlength=bins)
    return float(np.abs(gaps).sum() / refs.size)


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN: a group or class without test samples is reported as null.
    return float(value) if math.isfinite(value) else None


def _calibration(
    probabilities: Any, predictions: np.ndarray, references: np.ndarray, groups: ClassGroups
) -> dict[str, Any]:
    """``ece``, ``ece_<group>`` (samples grouped by their true label) and ``group_mass`` of one model."""
    probs = _as_probabilities(probabilities, groups.num_classes)
    if probs.shape[0] != references.size:
        raise ValueError(
            f"probabilities has {probs.shape[0]} rows but there are {references.size} references; pass the "
            "softmax of the same test samples."
        )
    differ = int(np.count_nonzero(probs.argmax(axis=1) != predictions))
    if differ:
        raise ValueError(
            f"predictions differ from probabilities.argmax(-1) at {differ} of {references.size} samples; pass "
            "one model's probabilities and predictions=probabilities.argmax(-1), so that accuracy and calibration "
            "describe the same predictions."
        )
    label_group = np.asarray(groups.class_to_group, dtype=np.int64)[references]
    out: dict[str, Any] = {"ece": expected_calibration_error(probs, references, ECE_BINS)}
    for g, name in enumerate(groups.names):
        in_group = label_group == g
        out[f"ece_{name}"] = (
            expected_calibration_error(probs[in_group], references[in_group], ECE_BINS) if in_group.any() else None
        )
    out["group_mass"] = group_mass(probs, groups).tolist()
    return out


def evaluation_report(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    *,
    class_counts: Sequence[int],
    num_groups: int = 3,
    many: int = 100,
    few: int = 20,
    probabilities: Sequence[Sequence[float]] | np.ndarray | None = None,
    groups: ClassGroups | None = None,
) -> dict[str, Any]:
    """The full, JSON-serialisable report of one model on a test split.

    Keys: ``accuracy`` (overall top-1); ``accuracy_<name>`` for the paper's frequency groups
    (``ClassGroups.from_counts(class_counts, num_groups)``: head / medium / tail for K = 3);
    ``accuracy_many_shot`` / ``accuracy_medium_shot`` / ``accuracy_few_shot``, the literature's threshold groups
    (``ClassGroups.by_threshold(class_counts, many, few)``: more than ``many``, ``few`` to ``many``, fewer than
    ``few`` training images; ``None`` for a group without classes); ``per_class`` (one accuracy per class,
    ``None`` where the class has no test sample); ``num_samples``; ``test_counts`` (test samples per class, so a
    report says whether its test split was balanced); ``class_counts``; and the group definitions
    ``groups`` and ``threshold_groups`` (``ClassGroups.to_dict()`` plus ``sizes``; the thresholds too).

    With ``probabilities`` (the ``(N, C)`` softmax whose argmax is ``predictions``) it adds ``ece`` and
    ``ece_<name>`` per paper group (``expected_calibration_error`` with 15 bins, over the samples whose *true*
    label is in the group) and ``group_mass`` (``group_mass``: the mean probability the model puts on each
    paper group, group id order). Accuracies and ECE are fractions in [0, 1]; a group without test samples
    is ``None``. ``groups``, when given (the trainer's), are the paper groups as they are, instead of being
    rebuilt from ``class_counts`` and ``num_groups``.
    """
    paper = groups if groups is not None else ClassGroups.from_counts(class_counts, num_groups)
    if paper.num_classes != len(class_counts):
        raise ValueError(f"groups cover {paper.num_classes} classes but class_counts has {len(class_counts)}.")
    threshold = ClassGroups.by_threshold(class_counts, many=many, few=few)
    preds, refs = _check_pair(predictions, references, paper.num_classes)
    report: dict[str, Any] = {k: _finite_or_none(v) for k, v in group_accuracy(preds, refs, paper).items()}
    shots = group_accuracy(preds, refs, threshold)
    for name in SHOT_GROUPS:
        report[f"accuracy_{name}_shot"] = _finite_or_none(shots.get(f"accuracy_{name}", math.nan))
    if probabilities is not None:
        report.update(_calibration(probabilities, preds, refs, paper))
    report["per_class"] = [_finite_or_none(v) for v in per_class_accuracy(preds, refs, paper.num_classes).tolist()]
    report["num_samples"] = int(refs.size)
    report["test_counts"] = np.bincount(refs, minlength=paper.num_classes).tolist()
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
    probs = _as_probabilities(probabilities, groups.num_classes)
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    # In the probabilities' own dtype: a float64 copy of an ImageNet-size (N, C) array would double the memory.
    one_hot = np.eye(groups.num_groups, dtype=probs.dtype)[np.asarray(groups.class_to_group)]  # (C, K)
    mass = (probs @ one_hot).mean(axis=0, dtype=np.float64)
    return mass * batch_size if batch_size is not None else mass
