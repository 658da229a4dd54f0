"""The model card: Hub metadata with per-group accuracy in ``model-index``, and a body rendered from Jinja."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import jinja2
from huggingface_hub import EvalResult, ModelCardData

from .._atomic import atomic_write_files
from .save import is_repo_id

__all__ = ["render_model_card", "write_model_card", "REQUIRED_RESULTS", "CARD_TAGS"]

TEMPLATE_NAME = "model_card.md.jinja"
REQUIRED_RESULTS = ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail")
CARD_TAGS = ("image-classification", "knowledge-distillation", "long-tailed", "ltkd", "timm")
_METRIC_NAMES = {
    "accuracy": "Top-1 accuracy (all classes)",
    "accuracy_head": "Top-1 accuracy (head classes)",
    "accuracy_medium": "Top-1 accuracy (medium classes)",
    "accuracy_tail": "Top-1 accuracy (tail classes)",
}


def _hub_id(name: str) -> str | None:
    """``name`` as a Hub repo id when it is one (``owner/name``, optionally ``hf-hub:``-prefixed), else None."""
    name = name.removeprefix("hf-hub:")
    return name if is_repo_id(name) else None


def _format_value(value: float) -> str:
    # 4 significant digits reads right for both percentages (62.54) and fractions (0.6254).
    return f"{value:.4g}"


def _eval_results(dataset: str, split: str, results: Mapping[str, float]) -> list[EvalResult]:
    """One EvalResult per metric, so model-index carries overall, head, medium and tail accuracy."""
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=key,
            metric_name=_METRIC_NAMES.get(key, key),
            metric_value=float(value),
        )
        for key, value in results.items()
    ]


def _check_inputs(
    num_groups: int, group_names: Sequence[str], results: Mapping[str, Any], plots: Sequence[str], rho: float
) -> None:
    if len(group_names) != num_groups:
        raise ValueError(
            f"group_names has {len(group_names)} names ({list(group_names)}) but num_groups={num_groups}; "
            "pass one name per group."
        )
    missing = [key for key in REQUIRED_RESULTS if key not in results]
    if missing:
        raise ValueError(
            f"results is missing {missing}; the card's model-index needs {list(REQUIRED_RESULTS)} "
            f"(got keys {sorted(results)})."
        )
    bad = {k: v for k, v in results.items() if not isinstance(v, (int, float)) or v != v}
    if bad:
        raise ValueError(f"results values must be finite numbers, got {bad}.")
    for plot in plots:
        if urlparse(plot).scheme or os.path.isabs(plot) or ".." in Path(plot).parts:
            raise ValueError(
                f"plots entry {plot!r} must be a path relative to the model folder (e.g. 'plots/per_class.png') "
                "so the link works on the Hub."
            )
    if not rho >= 1:
        raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min of the training split), got {rho}.")


def render_model_card(
    *,
    model_name: str,
    architecture: str,
    teacher: str,
    dataset: str,
    imbalance_factor: float,
    num_groups: int,
    group_names: Sequence[str],
    loss_name: str,
    loss_config: Mapping[str, Any],
    results: Mapping[str, float],
    dataset_split: str = "test",
    license: str = "apache-2.0",
    plots: Sequence[str] = (),
    comparison_table: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The README.md model card of a distilled student, as text.

    YAML front matter: ``library_name: timm``, tags (image-classification, knowledge-distillation, long-tailed,
    ltkd, timm), ``datasets``, ``base_model`` (the teacher, when it is a Hub id ``owner/name`` and not an existing local path), ``license`` and a
    ``model-index`` with one entry per metric in ``results`` (overall, head, medium and tail accuracy are
    required). The body: usage with timm, transformers and ``pipeline``; the training setup (long-tailed
    split, imbalance factor, groups, loss and weights, teacher); the per-group results table; ``plots``
    (paths relative to the model folder); an optional ``comparison_table`` (Markdown); ``extra`` details;
    and the citation of the LTKD paper.
    """
    results = dict(results)
    _check_inputs(num_groups, group_names, results, plots, imbalance_factor)
    base_model = _hub_id(teacher)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="timm",
        pipeline_tag="image-classification",
        tags=list(CARD_TAGS),
        datasets=[dataset],
        base_model=base_model,
        license=license,
        eval_results=_eval_results(dataset, dataset_split, results),
    )
    repo_id = model_name if _hub_id(model_name) else f"<your-username>/{model_name}"
    group_rows = [
        (name, _format_value(results[f"accuracy_{name}"]) if f"accuracy_{name}" in results else "n/a")
        for name in group_names
    ]
    group_keys = {f"accuracy_{name}" for name in group_names}
    other_results = {key: value for key, value in results.items() if key not in group_keys}
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["value"] = _format_value
    template = env.from_string(resources.files("ltkd_hf").joinpath("model_cards", TEMPLATE_NAME).read_text("utf-8"))
    return template.render(
        front_matter=card_data.to_yaml(),
        model_name=model_name,
        repo_id=repo_id,
        folder_name=Path(model_name).name,
        architecture=architecture,
        teacher=teacher,
        teacher_is_hub_id=base_model is not None,
        dataset=dataset,
        dataset_split=dataset_split,
        imbalance_factor=imbalance_factor,
        num_groups=num_groups,
        group_names=list(group_names),
        loss_name=loss_name,
        loss_config=dict(loss_config),
        other_results=other_results,
        metric_names=_METRIC_NAMES,
        group_rows=group_rows,
        plots=list(plots),
        comparison_table=comparison_table,
        extra=dict(extra or {}),
    )


def write_model_card(output_dir: str | os.PathLike, card_text: str) -> Path:
    """Write ``card_text`` as ``output_dir/README.md`` atomically; returns the file's path."""
    out = atomic_write_files(output_dir, {"README.md": lambda path: path.write_text(card_text, encoding="utf-8")})
    return out / "README.md"
