"""The model card: Hub metadata with per-group accuracy and calibration in ``model-index``, rendered with
``ModelCard.from_template``."""

from __future__ import annotations

import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .._atomic import atomic_write_files
from ..data.split_info import SplitInfo
from ..evaluation.metrics import ECE_BINS, SHOT_GROUPS, describe_test_split
from ..groups import ClassGroups
from ..models.hub_source import is_repo_id

__all__ = ["render_model_card", "required_results", "results_from_report", "write_model_card", "CARD_TAGS"]

TEMPLATE_NAME = "model_card.md.jinja"
# Every card's tags; a distilled student's add "knowledge-distillation" and its loss's name ("ltkd", "dkd", ...).
CARD_TAGS = ("image-classification", "long-tailed", "timm")
_SHOTS = {
    "many": "many-shot classes: more than 100 training images",
    "medium": "medium-shot classes: 20 to 100 training images",
    "few": "few-shot classes: fewer than 20 training images",
}
_METRIC_NAMES = {
    "accuracy": "Top-1 accuracy (all classes)",
    **{f"accuracy_{g}": f"Top-1 accuracy ({g} classes)" for g in ("head", "medium", "tail")},
    **{f"accuracy_{g}_shot": f"Top-1 accuracy ({text})" for g, text in _SHOTS.items()},
    "ece": f"Expected calibration error (all classes, {ECE_BINS} bins)",
    **{f"ece_{g}": f"Expected calibration error ({g} classes, {ECE_BINS} bins)" for g in ("head", "medium", "tail")},
}


def required_results(groups: ClassGroups) -> tuple[str, ...]:
    """The accuracies a card needs: overall, and with the paper's head / medium / tail groups each of theirs (the
    paper's table). Another K's groups (``group_0`` ...) are shown when given, n/a when not."""
    paper = groups.names == ("head", "medium", "tail")
    return ("accuracy", *(f"accuracy_{name}" for name in groups.names if paper))


def results_from_report(report: Mapping[str, Any]) -> dict[str, float]:
    """The card's ``results`` from one model's ``evaluation_report``: its finite accuracies (overall, per group,
    many / medium / few-shot) and expected calibration errors; a group without classes or test images is left out."""
    return {
        key: float(value)
        for key, value in report.items()
        if key.startswith(("accuracy", "ece"))
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def _hub_id(name: str | None) -> str | None:
    """``name`` as a Hub repo id when it is one (``owner/name``, optionally ``hf-hub:``-prefixed), else None."""
    if not name:
        return None
    name = name.removeprefix("hf-hub:").split("@", 1)[0]
    return name if is_repo_id(name) else None


def _format_result(key: str, value: float | None) -> str:
    """Accuracies and calibration errors (fractions) as percentages with 2 decimals, as in the report; other
    metrics to 4 digits; a missing one as n/a."""
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" if key.startswith(("accuracy", "ece")) else f"{value:.4g}"


def _table(rows: Mapping[str, Any] | Sequence[Sequence[Any]], header: Sequence[str] = ("", "")) -> str:
    """A Markdown table: ``rows`` as ``{first cell: second}`` or as sequences of cells, one per column of ``header``."""
    items = list(rows.items()) if isinstance(rows, Mapping) else rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", chr(92) + "|") for cell in row) + " |" for row in items]
    return "\n".join(lines)


def _results_tables(results: Mapping[str, float], groups: ClassGroups) -> dict[str, Any]:
    """The card's results as Markdown: per frequency group and overall (with an ECE column when there is one),
    many / medium / few-shot, and the other metrics; ``None`` for a table without rows. ``with_ece`` says
    whether there is an ECE column."""

    def cell(key: str) -> str:
        return _format_result(key, results.get(key))

    with_ece = any(key.startswith("ece") for key in results)
    suffixes = [(name, f"_{name}") for name in groups.names] + [("all classes", "")]
    header = ["Classes", "Top-1 accuracy (%)"] + (["ECE (%)"] if with_ece else [])
    rows = [[label, cell(f"accuracy{suffix}")] + ([cell(f"ece{suffix}")] if with_ece else []) for label, suffix in suffixes]
    shot_keys = {group: f"accuracy_{group}_shot" for group in SHOT_GROUPS}
    shots = [[f"{group}-shot", cell(key)] for group, key in shot_keys.items()]
    shown = {f"{metric}{suffix}" for metric in ("accuracy", "ece") for _, suffix in suffixes} | set(shot_keys.values())
    others = [[_METRIC_NAMES.get(key, key), _format_result(key, value)] for key, value in results.items() if key not in shown]
    return {
        "with_ece": with_ece,
        "results_table": _table(rows, header),
        "shot_table": _table(shots, ("Classes", "Top-1 accuracy (%)")) if set(shot_keys.values()) & set(results) else None,
        "other_results_table": _table(others, ("Metric", "Value")) if others else None,
    }


def _check_inputs(groups: ClassGroups, results: Mapping[str, Any], plots: Sequence[str]) -> None:
    required = required_results(groups)
    missing = [key for key in required if key not in results]
    if missing:
        raise ValueError(
            f"results is missing {missing}; the card's model-index needs {list(required)} (got keys {sorted(results)})."
        )
    bad = {k: v for k, v in results.items() if not isinstance(v, (int, float)) or v != v}
    if bad:
        raise ValueError(f"results values must be finite numbers, got {bad}.")
    for plot in plots:
        if urlparse(plot).scheme or os.path.isabs(plot) or ".." in Path(plot).parts:
            raise ValueError(
                f"plots entry {plot!r} must be a path relative to the model folder (e.g. 'per_class_accuracy.png') "
                "so the link works on the Hub."
            )


def render_model_card(
    *,
    model_name: str,
    architecture: str,
    split_info: SplitInfo,
    groups: ClassGroups,
    loss_name: str,
    results: Mapping[str, float],
    teacher: str | None = None,
    student_init: str | None = None,
    base_model: str | None = None,
    loss_description: str | None = None,
    loss_config: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    plots: Sequence[str] = (),
    comparison_table: str | None = None,
    test_counts: Sequence[int] | None = None,
    caveats: Sequence[str] = (),
    license: str = "apache-2.0",
) -> str:
    """The README.md model card of a trained student, as text.

    Front matter (``huggingface_hub.ModelCardData``): ``library_name: timm``, tags, ``datasets`` (only for a
    Hub dataset), ``base_model`` (the Hub checkpoint the student's weights started from: ``base_model``, or
    ``student_init`` when it is a Hub id; never the teacher, whose weights the student does not derive from: the
    Hub would list it among the teacher's fine-tunes), the license and a ``model-index`` with one entry per
    metric in ``results`` (`required_results`: overall accuracy, and head / medium / tail with the 3 paper groups;
    many / medium / few-shot accuracy ``accuracy_<many|medium|few>_shot`` and expected calibration error ``ece``,
    ``ece_<group>`` are shown when given: ``results_from_report(evaluation_report(...))`` gives them all). The
    body, rendered from the package's Jinja template with ``ModelCard.from_template``: usage with timm,
    transformers and ``pipeline``; where the student and the teacher came from; the long-tailed split as it was
    made (``split_info.describe()``) and the held-out split's real name, with whether it is balanced when its
    ``test_counts`` (test images per class, as `evaluation_report` records them) are given; the loss and its
    settings; ``training``
    facts (seeds, schedule); per-group accuracy and ECE, many / medium / few-shot accuracy and any other metric;
    an optional ``comparison_table`` (Markdown, e.g. ``format_report_tables``) and ``plots`` (paths relative to
    the folder); ``caveats`` about the evaluation data (one sentence each, e.g. held-out images that are copies of
    training images), under the results; the LTKD citation.
    """
    results = dict(results)
    _check_inputs(groups, results, plots)
    dataset = split_info.published_source or "the training data"
    test_split = split_info.test_split or "held-out"
    test_balance = describe_test_split(test_counts)
    base_model = _hub_id(base_model) or _hub_id(student_init)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="timm",
        pipeline_tag="image-classification",
        tags=[*CARD_TAGS, *(() if loss_name.lower() == "ce" else ("knowledge-distillation", loss_name.lower()))],
        datasets=[split_info.hub_dataset_id] if split_info.hub_dataset_id else None,
        base_model=base_model,
        license=license,
        eval_results=[
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=split_info.hub_dataset_id or split_info.source_kind or "imagefolder",
                dataset_name=dataset,
                dataset_split=test_split,
                metric_type=key,
                metric_name=_METRIC_NAMES.get(key, key),
                metric_value=float(value),
            )
            for key, value in results.items()
        ],
    )
    # a folder's name made a repo name: letters, digits, '.', '_' and '-' ("my run" was an invalid id in the snippet)
    repo_name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_name).name).strip("-.") or "model"
    repo_id = _hub_id(model_name) or f"<your-username>/{repo_name}"
    teacher_text = "none (cross-entropy training)"
    if teacher:
        teacher_text = f"[`{teacher}`](https://huggingface.co/{_hub_id(teacher)})" if _hub_id(teacher) else f"`{teacher}`"
    setup = {
        "Model": f"`{architecture}`, started from "
        + (f"`{student_init}`" if student_init else "random initialisation"),
        "Teacher": teacher_text,
        "Training data": f"`{dataset}`, split `{split_info.train_split or 'train'}`: {split_info.describe()}",
        "Evaluation data": f"`{dataset}`, split `{test_split}`" + (f" ({test_balance})" if test_balance else ""),
        "Class groups": f"{groups.num_groups} by training-set frequency: " + ", ".join(groups.labelled()),
        "Loss": loss_description or loss_name,
        **{key[:1].upper() + key[1:]: value for key, value in (training or {}).items()},
    }
    template = resources.files("ltkd_hf").joinpath("model_cards", TEMPLATE_NAME).read_text("utf-8")
    card = ModelCard.from_template(
        card_data,
        template_str=template,
        title=model_name,
        repo_id=repo_id,
        folder_name=Path(model_name).name,
        architecture=architecture,
        dataset=dataset,
        is_ltkd=loss_name.lower() == "ltkd",
        loss_name=loss_name,
        setup_table=_table(setup),
        loss_table=_table({f"`{k}`": f"`{v}`" for k, v in (loss_config or {}).items()}, ("Setting", "Value")),
        ece_bins=ECE_BINS,
        **_results_tables(results, groups),
        test_split=test_split,
        test_balance=test_balance,
        comparison_table=comparison_table.strip() if comparison_table else None,
        plots=list(plots),
        caveats=list(caveats),
    )
    return str(card)


def write_model_card(output_dir: str | os.PathLike, card_text: str) -> Path:
    """Write ``card_text`` as ``output_dir/README.md`` atomically; returns the file's path."""
    out = atomic_write_files(output_dir, {"README.md": lambda path: path.write_text(card_text, encoding="utf-8")})
    return out / "README.md"
