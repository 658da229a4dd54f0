"""The evaluation report on disk: report.json, report.md (per-group table) and PNG plots.

Plots are drawn on a bare ``Figure`` with the Agg canvas, so no display is needed and the caller's
pyplot backend is left alone. Every file is written atomically: an interrupted run keeps the last
complete file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._atomic import atomic_write_files
from ..groups import ClassGroups

__all__ = ["format_group_table", "plot_per_class_accuracy", "plot_teacher_bias", "write_report"]

_GROUP_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.2f}"


def format_group_table(
    rows: Mapping[str, Mapping[str, float | None]], group_names: Sequence[str] = ("head", "medium", "tail")
) -> str:
    """A Markdown table of top-1 accuracy (%, 2 decimals): one row per model, one column per group, then
    overall.

    Each row maps ``accuracy`` and ``accuracy_<group>`` to a fraction in [0, 1], as returned by
    ``group_accuracy`` or ``evaluation_report``; ``None``/``nan`` prints as ``n/a``.
    """
    if not rows:
        raise ValueError("rows is empty; pass {model name: group_accuracy(...) or evaluation_report(...)}.")
    keys = [f"accuracy_{name}" for name in group_names] + ["accuracy"]
    lines = [
        "| model | " + " | ".join([*group_names, "overall"]) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for model, metrics in rows.items():
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise ValueError(
                f"rows[{model!r}] lacks {missing} (has {sorted(metrics)}); each row needs 'accuracy' and "
                f"'accuracy_<group>' for group_names={list(group_names)}."
            )
        cells = [_percent(metrics[k]) for k in keys]
        lines.append(f"| {str(model).replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)  # attach the Agg canvas: rendering needs neither pyplot nor a display
    atomic_write_files(
        path.parent, {path.name: lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")}
    )
    return path


def _group_spans(counts: np.ndarray, groups: ClassGroups) -> list[tuple[float, float]]:
    """The training-count interval of each group on a log axis, split at the geometric midpoint between
    neighbouring groups so the shaded bands touch without overlapping."""
    lows = [float(counts[groups.classes_of(g)].min()) for g in range(groups.num_groups)]
    highs = [float(counts[groups.classes_of(g)].max()) for g in range(groups.num_groups)]
    order = sorted(range(groups.num_groups), key=lambda g: -highs[g])
    spans = [(0.0, 0.0)] * groups.num_groups
    upper = highs[order[0]] * 1.5
    for i, g in enumerate(order):
        nxt = order[i + 1] if i + 1 < len(order) else None
        lower = math.sqrt(lows[g] * highs[nxt]) if nxt is not None else lows[g] / 1.5
        spans[g] = (lower, upper)
        upper = lower
    return spans


def plot_per_class_accuracy(
    per_class_by_model: Mapping[str, Sequence[float | None]],
    class_counts: Sequence[int],
    groups: ClassGroups,
    path: str | os.PathLike,
) -> Path:
    """Per-class test accuracy (%) against training images per class (log scale), one series per model,
    with each frequency group shaded. Classes without test samples (``None``/``nan``) are left out."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size != groups.num_classes:
        raise ValueError(
            f"class_counts has {counts.size} entries but groups covers {groups.num_classes} classes; pass the "
            f"training counts the groups were built from."
        )
    if not per_class_by_model:
        raise ValueError("per_class_by_model is empty; pass {model name: per-class accuracies}.")
    if np.any(counts < 1):
        raise ValueError(
            f"class_counts must be >= 1 for the log-scale axis, got classes {np.flatnonzero(counts < 1).tolist()} "
            f"with no training image; drop them from the plot."
        )
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for g, (lo, hi) in enumerate(_group_spans(counts, groups)):
        # Grey bands, so the group shading cannot be mistaken for a model's colour.
        ax.axvspan(lo, hi, color="grey", alpha=0.08 if g % 2 else 0.18, lw=0)
        ax.text(math.sqrt(lo * hi), 1.0, groups.names[g], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9)
    order = np.argsort(counts, kind="stable")
    window = max(1, counts.size // 10)
    for i, (model, values) in enumerate(per_class_by_model.items()):
        acc = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if acc.size != counts.size:
            raise ValueError(
                f"per_class_by_model[{model!r}] has {acc.size} values, expected one per class ({counts.size})."
            )
        colour = f"C{i}"
        ax.scatter(counts, 100 * acc, s=14, alpha=0.45, color=colour)
        # A moving average over the count-sorted classes shows the trend through the per-class scatter.
        sorted_acc = acc[order]
        valid = ~np.isnan(sorted_acc)
        if valid.any():
            kernel = np.ones(window)
            num = np.convolve(np.where(valid, sorted_acc, 0.0), kernel, mode="same")
            den = np.convolve(valid.astype(np.float64), kernel, mode="same")
            trend = np.where(den > 0, num / np.maximum(den, 1), np.nan)
            ax.plot(counts[order], 100 * trend, color=colour, lw=2, label=str(model))
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("test accuracy per class (%)")
    ax.set_title("Per-class accuracy vs training frequency", pad=18)
    ax.grid(True, which="major", alpha=0.3)
    trend_note = f"line: moving mean of {window} classes" if window > 1 else None
    ax.legend(loc="lower right", fontsize=9, title=trend_note, title_fontsize=8)
    return _save_figure(fig, path)


def plot_teacher_bias(
    mass: Sequence[float],
    group_names: Sequence[str],
    path: str | os.PathLike,
    *,
    reference: Sequence[float] | None = None,
) -> Path:
    """Bar chart of the teacher's probability mass per group on the balanced test set against the mass a
    balanced model would give (``reference``; the paper's Fig. 3). ``reference`` defaults to an equal share
    of the total per group; pass ``sum(mass) * group size / C`` for unequal groups."""
    values = np.asarray(mass, dtype=np.float64)
    if values.ndim != 1 or values.size != len(group_names) or values.size == 0:
        raise ValueError(
            f"mass must hold one value per group name ({list(group_names)}), got shape {values.shape}."
        )
    total = float(values.sum())
    ref = np.full(values.size, total / values.size) if reference is None else np.asarray(reference, np.float64)
    if ref.shape != values.shape:
        raise ValueError(f"reference must hold one value per group ({values.size}), got shape {ref.shape}.")
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    x = np.arange(values.size)
    bars = ax.bar(x, values, width=0.6, color=[_GROUP_COLOURS[g % len(_GROUP_COLOURS)] for g in x],
                  label="teacher")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2, fontsize=9)
    ax.hlines(ref, x - 0.4, x + 0.4, colors="black", linestyles="--", lw=1.5, label="uniform (balanced model)")
    ax.set_xticks(x, [str(n) for n in group_names])
    ax.set_ylim(0, 1.2 * max(values.max(), ref.max()))
    if math.isclose(total, 1.0, abs_tol=1e-6):
        ax.set_ylabel("mean group probability mass per test image")
    else:
        ax.set_ylabel(f"group probability mass (sum over a batch of {total:g} images)")
    ax.set_xlabel("class group (by training frequency)")
    ax.set_title("Teacher bias on the balanced test set")
    ax.legend(loc="upper right", fontsize=9)
    return _save_figure(fig, path)


def _jsonable(value: Any) -> Any:
    """numpy values as Python ones and non-finite floats as None, so the file is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(data: Any, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)

    try:
        atomic_write_files(path.parent, {path.name: write})
    except TypeError as err:
        raise ValueError(f"the report for {path} holds a value JSON cannot store ({err}); pass plain "
                         f"numbers, strings, lists and dicts in reports and metadata.") from err


def _write_text(text: str, path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write_files(path.parent, {path.name: write})


def _markdown(
    reports: Mapping[str, Mapping[str, Any]],
    groups: ClassGroups,
    metadata: Mapping[str, Any],
    images: Mapping[str, str],
) -> str:
    lines = ["# Evaluation report", ""]
    lines += [f"- **{k}**: {v}" for k, v in metadata.items()]
    lines += [
        f"- **groups**: {', '.join(f'{n} ({s} classes)' for n, s in zip(groups.names, groups.sizes))}, "
        f"by training frequency",
        "",
        "Top-1 accuracy (%) on the balanced test split; a group's accuracy is over the test images of its "
        "classes.",
        "",
        format_group_table(reports, groups.names),
    ]
    threshold = {m: r["threshold_accuracy"] for m, r in reports.items() if "threshold_accuracy" in r}
    if len(threshold) == len(reports):
        first = next(iter(reports.values()))["threshold_groups"]
        names = first["names"]
        rows = {m: {**t, "accuracy": reports[m]["accuracy"]} for m, t in threshold.items()}
        lines += [
            f"By training-count thresholds (many: > {first['many']}, medium: {first['few']}..{first['many']}, "
            f"few: < {first['few']} images):",
            "",
            format_group_table(rows, names),
        ]
    lines += [f"![{title}]({name})" for title, name in images.items()]
    return "\n".join(lines) + "\n"


def write_report(
    output_dir: str | os.PathLike,
    reports: Mapping[str, Mapping[str, Any]],
    *,
    class_counts: Sequence[int],
    groups: ClassGroups,
    teacher_group_mass: Sequence[float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.json, report.md, per_class_accuracy.png and (with ``teacher_group_mass``)
    teacher_bias.png into ``output_dir``, each atomically; returns ``{"json", "markdown",
    "per_class_plot", "teacher_bias_plot"}`` -> path.

    ``reports`` maps a model name ("teacher", "student (CE)", "student (LTKD)", ...) to its
    ``evaluation_report``; ``groups`` are the frequency groups of the table and the plot shading;
    ``teacher_group_mass`` is ``group_mass`` of the teacher on the test set; ``metadata`` (dataset, ρ, loss,
    seed, which checkpoint was evaluated, ...) goes into both files.
    """
    if not reports:
        raise ValueError("reports is empty; pass {model name: evaluation_report(...)}.")
    missing = [m for m, r in reports.items() if "per_class" not in r]
    if missing:
        raise ValueError(f"reports for {missing} lack 'per_class'; build each with evaluation_report(...).")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata or {})
    paths = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "per_class_plot": out / "per_class_accuracy.png",
    }
    images = {"per-class accuracy vs training count": paths["per_class_plot"].name}
    mass = None
    if teacher_group_mass is not None:
        mass = np.asarray(teacher_group_mass, dtype=np.float64)
        paths["teacher_bias_plot"] = out / "teacher_bias.png"
        images["teacher group mass"] = paths["teacher_bias_plot"].name
    payload = {
        "metadata": metadata,
        "groups": {**groups.to_dict(), "sizes": groups.sizes},
        "class_counts": [int(c) for c in class_counts],
        "teacher_group_mass": mass,
        "models": reports,
    }
    _write_json(_jsonable(payload), paths["json"])
    _write_text(_markdown(reports, groups, metadata, images), paths["markdown"])
    plot_per_class_accuracy({m: r["per_class"] for m, r in reports.items()}, class_counts, groups,
                            paths["per_class_plot"])
    if mass is not None:
        uniform = mass.sum() * np.asarray(groups.sizes, dtype=np.float64) / groups.num_classes
        plot_teacher_bias(mass, groups.names, paths["teacher_bias_plot"], reference=uniform)
    return paths
