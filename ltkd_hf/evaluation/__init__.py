"""Evaluation of long-tailed classifiers: overall, per-group and per-class accuracy, the teacher's group
mass, the `evaluate` module that wraps them, and the JSON / Markdown / PNG report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import evaluation_report, group_accuracy, group_mass, per_class_accuracy, top1_accuracy
from .report import format_group_table, plot_per_class_accuracy, plot_teacher_bias, write_report

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
    "GROUP_ACCURACY_PATH",
    "evaluation_report",
    "format_group_table",
    "group_accuracy",
    "group_mass",
    "load_group_accuracy",
    "per_class_accuracy",
    "plot_per_class_accuracy",
    "plot_teacher_bias",
    "top1_accuracy",
    "write_report",
]
