"""The evaluation report on disk: report.json, report.md (per-group tables) and PNG plots.

Plots are drawn on a bare ``Figure`` with the Agg canvas, so no display is needed and the caller's
pyplot backend is left alone; matplotlib is imported by the first plot (about 1 s), not with the package, so a
program that draws nothing (a --help, a dry run, a refusal) does not pay for it. Every file is written atomically:
an interrupted run keeps the last complete file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .._atomic import atomic_write_files
from ..groups import ClassGroups
from .metrics import ECE_BINS, SHOT_GROUPS, describe_test_split

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "balanced_group_mass",
    "format_group_table",
    "format_report_tables",
    "plot_group_mass",
    "plot_per_class_accuracy",
    "write_report",
]


def _percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.2f}"


def format_group_table(
    rows: Mapping[str, Mapping[str, float | None]],
    group_names: Sequence[str] = ("head", "medium", "tail"),
    *,
    metric: str = "accuracy",
    suffix: str = "",
) -> str:
    """A Markdown table of one metric (%, 2 decimals): one row per model, one column per group, then overall.

    Each row maps ``<metric>`` and ``<metric>_<group><suffix>`` to a fraction in [0, 1], as in
    ``group_accuracy`` or ``evaluation_report`` (``metric="ece"`` for calibration, ``suffix="_shot"`` with
    ``group_names=SHOT_GROUPS`` for many / medium / few-shot); ``None``/``nan`` prints as ``n/a``.
    """
    if not rows:
        raise ValueError("rows is empty; pass {model name: group_accuracy(...) or evaluation_report(...)}.")
    keys = [f"{metric}_{name}{suffix}" for name in group_names] + [metric]
    lines = [
        "| model | " + " | ".join([*group_names, "overall"]) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for model, metrics in rows.items():
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise ValueError(
                f"rows[{model!r}] lacks {missing} (has {sorted(metrics)}); each row needs {metric!r} and "
                f"'{metric}_<group>{suffix}' for group_names={list(group_names)}."
            )
        cells = [_percent(metrics[k]) for k in keys]
        lines.append(f"| {str(model).replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def balanced_group_mass(groups: ClassGroups) -> np.ndarray:
    """The balanced target of the group-mass plot: each group's share of the classes, ``|G| / C``.

    On a balanced test split (as many images per class) a fraction ``|G| / C`` of the images belong to group
    ``G``, so a model whose mean predicted distribution equals the test labels' distribution (a perfect
    classifier, or one with no preference among classes) puts on average ``|G| / C`` of its probability on
    ``G``. Mass above it on the head and below it on the tail is the head bias."""
    return np.asarray(groups.sizes, dtype=np.float64) / groups.num_classes


def format_report_tables(reports: Mapping[str, Mapping[str, Any]], groups: ClassGroups) -> str:
    """The report's tables in Markdown, each with a one-line caption: head / medium / tail top-1 accuracy; the same
    on the validation split for the rows that carry one (``"validation"``); many / medium / few-shot accuracy;
    expected calibration error per group; and the mean group probability mass against the balanced target.
    ``reports`` maps a model name to its ``evaluation_report``; a table lists the rows that hold its keys
    (calibration and group mass need the ``probabilities`` of ``evaluation_report``)."""
    test = describe_test_split(next((r["test_counts"] for r in reports.values() if r.get("test_counts")), None))
    on = f"the test split ({test})" if test else "the test split"
    parts = [
        f"Top-1 accuracy (%) on {on}; a group's accuracy is over the test images of its classes.",
        format_group_table(reports, groups.names),
    ]
    validated = {m: r["validation"] for m, r in reports.items() if r.get("validation")}
    if validated:
        parts += [
            "Top-1 accuracy (%) on the validation split (held-out data to choose settings on; the test split's are "
            "above):",
            format_group_table(validated, groups.names),
        ]
    shot = {m: r for m, r in reports.items() if "accuracy_many_shot" in r}
    if shot:
        bounds = next(iter(shot.values()))["threshold_groups"]
        parts += [
            f"Top-1 accuracy (%) by training images per class (many-shot: more than {bounds['many']}, medium-shot: "
            f"{bounds['few']} to {bounds['many']}, few-shot: fewer than {bounds['few']}; n/a: no such class or no "
            "test image):",
            format_group_table(shot, SHOT_GROUPS, suffix="_shot"),
        ]
    calibrated = {m: r for m, r in reports.items() if "ece" in r}
    if calibrated:
        parts += [
            f"Expected calibration error (%, top-label confidence in {ECE_BINS} equal-width bins; lower is better); "
            "a group's is over the test images of its classes.",
            format_group_table(calibrated, groups.names, metric="ece"),
        ]
    masses = {m: r["group_mass"] for m, r in reports.items() if r.get("group_mass") is not None}
    if masses:
        target = balanced_group_mass(groups)
        lines = [
            "| model | " + " | ".join(groups.names) + " |",
            "|---|" + "---:|" * groups.num_groups,
            *(f"| {str(m).replace('|', '/')} | " + " | ".join(f"{v:.3f}" for v in mass) + " |" for m, mass in masses.items()),
            "| balanced target | " + " | ".join(f"{v:.3f}" for v in target) + " |",
        ]
        parts += [
            f"Mean predicted probability mass per group on {on}; the balanced target is each "
            "group's share of the classes. More than the target on the head is the head bias.",
            "\n".join(lines) + "\n",
        ]
    return "\n".join(part if part.endswith("\n") else part + "\n" for part in parts)


def _save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

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
    from matplotlib.figure import Figure

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


def _mass_arrays(masses: Mapping[str, Sequence[float]], groups: ClassGroups) -> dict[str, np.ndarray]:
    """``masses`` as float arrays, checked: one finite value per group, the same total for every model."""
    if not masses:
        raise ValueError("masses is empty; pass {model name: group_mass(probabilities, groups)}.")
    values = {}
    for model, mass in masses.items():
        array = np.asarray(mass, dtype=np.float64)
        if array.shape != (groups.num_groups,) or not np.all(np.isfinite(array)):
            raise ValueError(
                f"masses[{model!r}] must hold one finite value per group ({list(groups.names)}), got {array.tolist()}."
            )
        values[model] = array
    totals = {m: float(v.sum()) for m, v in values.items()}
    if not all(math.isclose(t, next(iter(totals.values())), rel_tol=1e-3) for t in totals.values()):
        raise ValueError(
            f"masses have different totals {totals}; pass every model's group_mass on the same scale (all means "
            "per test image, or all with the same batch_size)."
        )
    return values


def plot_group_mass(masses: Mapping[str, Sequence[float]], groups: ClassGroups, path: str | os.PathLike) -> Path:
    """Bars of the probability mass each model puts on each group on the test set, beside the balanced
    target (dashed; ``balanced_group_mass`` scaled to the masses' total): the paper's Fig. 3 with the students
    added, so whether a student inherited the teacher's head bias is one picture.

    ``masses`` maps a model name to its ``group_mass`` (one value per group of ``groups``), all with the same
    total (1 for the mean per test image, or a batch size for ``group_mass(..., batch_size=...)``)."""
    values = _mass_arrays(masses, groups)
    total = float(next(iter(values.values())).sum())
    target = total * balanced_group_mass(groups)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.4))
    ax = fig.add_subplot()
    x = np.arange(groups.num_groups)
    width = 0.8 / len(values)
    for i, (model, array) in enumerate(values.items()):
        bars = ax.bar(x - 0.4 + (i + 0.5) * width, array, width=width * 0.92, color=f"C{i}", label=str(model))
        for text in ax.bar_label(bars, labels=[f"{v:.3g}" for v in array], padding=2, fontsize=7):
            text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})  # readable on the line
    ax.hlines(target, x - 0.45, x + 0.45, colors="black", linestyles="--", lw=1.5, zorder=1.5,
              label="balanced target (share of classes)")
    ax.set_xticks(x, groups.labelled())
    ax.set_ylim(0, 1.2 * max(max(v.max() for v in values.values()), target.max()))
    if math.isclose(total, 1.0, abs_tol=1e-3):
        ax.set_ylabel("mean predicted probability mass per test image")
    else:
        ax.set_ylabel(f"group probability mass (sum over a batch of {total:g} images)")
    ax.set_xlabel("class group (by training frequency)")
    ax.set_title("Predicted group mass on the test set")
    ax.legend(loc="best", fontsize=8)
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


def _readable(value: Any) -> str:
    """A metadata value as text: a mapping (the model's architecture and start) as ``key value`` pairs, not a dict;
    a list (the caveats) as its items joined by "; "; ``None`` (no teacher, no init) as "none", not Python's
    "None"."""
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_readable(inner)}" for key, inner in value.items())
    if isinstance(value, list):
        return "; ".join(_readable(item) for item in value)
    return str(value)


def _markdown(
    reports: Mapping[str, Mapping[str, Any]],
    groups: ClassGroups,
    metadata: Mapping[str, Any],
    images: Mapping[str, str],
) -> str:
    lines = ["# Evaluation report", ""]
    lines += [f"- **{k}**: {_readable(v)}" for k, v in metadata.items()]
    lines += [
        f"- **groups**: {', '.join(groups.labelled())}, "
        f"by training frequency",
        "",
        format_report_tables(reports, groups),
    ]
    lines += [f"![{title}]({name})\n" for title, name in images.items()]
    return "\n".join(lines)


def saved_report(
    output_dir: str | os.PathLike,
    scored: Mapping[str, Any],
    metadata: Mapping[str, Any],
    other_reports: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict] | None:
    """The rows of ``output_dir``/report.json when `write_report` wrote it with this ``scored`` record and
    ``metadata`` and its other rows are ``other_reports`` (as report.json stores them); else None."""
    path = Path(output_dir) / "report.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("models"), dict):
        return None
    scored_rows = {scored["row"], *(["teacher"] if scored["teacher"] is not None else [])}
    others = {row: report for row, report in saved["models"].items() if row not in scored_rows}
    same = (
        saved.get("scored") == _jsonable(scored)
        and saved.get("metadata") == _jsonable(metadata)
        and scored_rows <= set(saved["models"])
        and others == _jsonable(other_reports or {})
    )
    return saved["models"] if same else None


def write_report(
    output_dir: str | os.PathLike,
    reports: Mapping[str, Mapping[str, Any]],
    *,
    class_counts: Sequence[int],
    groups: ClassGroups,
    metadata: Mapping[str, Any] | None = None,
    label_names: Sequence[str] | None = None,
    scored: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.json, report.md, per_class_accuracy.png and (when a report holds ``group_mass``)
    teacher_bias.png into ``output_dir``, each atomically; returns ``{"json", "markdown", "per_class_plot",
    "teacher_bias_plot"}`` -> path.

    ``reports`` maps a model name ("teacher", "student (CE)", "student (LTKD)", ...) to its
    ``evaluation_report``; built with ``probabilities`` it carries the model's ECE and ``group_mass``, and
    teacher_bias.png shows the group mass of every such model beside the balanced target
    (``plot_group_mass``). ``groups`` are the frequency groups of the tables and plots (those the reports were
    built with); ``metadata`` (dataset, ρ, loss, seed, which checkpoint was evaluated, ...) goes into both files;
    ``label_names`` (class-index order), when given, name the classes of report.json's per-class lists;
    ``scored``, when given, is stored as report.json's ``"scored"``: what the report scored (`DistillationTrainer`
    records the weights, so that a finished stage run again reuses the report only for the same weights).
    """
    if not reports:
        raise ValueError("reports is empty; pass {model name: evaluation_report(...)}.")
    missing = [m for m, r in reports.items() if "per_class" not in r]
    if missing:
        raise ValueError(f"reports for {missing} lack 'per_class'; build each with evaluation_report(...).")
    # The tables and the plot label each row's per-group numbers with these groups' names.
    other = [m for m, r in reports.items() if "groups" in r and r["groups"]["class_to_group"] != list(groups.class_to_group)]
    if other:
        raise ValueError(
            f"reports for {other} were built with other groups than groups={groups.names} (class_to_group differs); "
            "build every evaluation_report with the class_counts and num_groups that made groups."
        )
    masses = {m: r["group_mass"] for m, r in reports.items() if r.get("group_mass") is not None}
    if masses:
        _mass_arrays(masses, groups)  # before any file is written
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata or {})
    paths = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "per_class_plot": out / "per_class_accuracy.png",
    }
    images = {"per-class accuracy vs training count": paths["per_class_plot"].name}
    if masses:
        paths["teacher_bias_plot"] = out / "teacher_bias.png"
        images["predicted group mass: teacher and students against the balanced target"] = (
            paths["teacher_bias_plot"].name
        )
    payload = {
        "metadata": metadata,
        "groups": {**groups.to_dict(), "sizes": groups.sizes},
        "class_counts": [int(c) for c in class_counts],
        **({"label_names": [str(n) for n in label_names]} if label_names is not None else {}),
        "balanced_group_mass": balanced_group_mass(groups),
        "models": reports,
        **({"scored": dict(scored)} if scored is not None else {}),
    }
    _write_json(_jsonable(payload), paths["json"])
    _write_text(_markdown(reports, groups, metadata, images), paths["markdown"])
    plot_per_class_accuracy({m: r["per_class"] for m, r in reports.items()}, class_counts, groups,
                            paths["per_class_plot"])
    if masses:
        plot_group_mass(masses, groups, paths["teacher_bias_plot"])
    return paths
