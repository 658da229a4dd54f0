"""Evaluation of long-tailed classifiers: overall, per-group, many / medium / few-shot and per-class accuracy,
expected calibration error, each model's group probability mass, the `evaluate` module for the accuracies,
and the JSON / Markdown / PNG report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import (
    ECE_BINS,
    SHOT_GROUPS,
    describe_test_split,
    evaluation_report,
    expected_calibration_error,
    group_accuracy,
    group_mass,
    per_class_accuracy,
    top1_accuracy,
)
from .report import (
    balanced_group_mass,
    format_group_table,
    format_report_tables,
    plot_group_mass,
    plot_per_class_accuracy,
    write_report,
)

if TYPE_CHECKING:
    import evaluate

GROUP_ACCURACY_PATH: str = str(Path(__file__).resolve().parent / "group_accuracy" / "group_accuracy.py")
"""Path of the local `evaluate` metric script inside the installed package (``evaluate.load`` it)."""


def load_group_accuracy(**load_kwargs: Any) -> "evaluate.EvaluationModule":
    """The group-accuracy metric loaded with ``evaluate.load`` from the package (works offline).

    ``load_kwargs`` go to ``evaluate.load`` (e.g. ``num_process``/``process_id`` for distributed
    evaluation, ``experiment_id``).
    """
    # Imported here: `evaluate` pulls in datasets/pyarrow, which the numpy metrics and reports never need.
    import evaluate

    return evaluate.load(GROUP_ACCURACY_PATH, **load_kwargs)


__all__ = [
    "ECE_BINS",
    "GROUP_ACCURACY_PATH",
    "SHOT_GROUPS",
    "balanced_group_mass",
    "describe_test_split",
    "evaluation_report",
    "expected_calibration_error",
    "format_group_table",
    "format_report_tables",
    "group_accuracy",
    "group_mass",
    "load_group_accuracy",
    "per_class_accuracy",
    "plot_group_mass",
    "plot_per_class_accuracy",
    "top1_accuracy",
    "write_report",
]
