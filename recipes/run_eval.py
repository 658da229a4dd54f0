"""Evaluate any saved student (a folder or a Hub id) on any split: overall, per-group and per-class accuracy.

    python recipes/run_eval.py --model outputs/ltkd-demo/student --dataset builtin:digits --output_dir eval-out

The groups come from the training class counts recorded in the folder's config.json (``ltkd.class_counts``);
for a model trained elsewhere, they are rebuilt from --dataset/--imbalance_factor/--lt_seed as in training.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from huggingface_hub import hf_hub_download  # noqa: E402
from timm.data import resolve_data_config  # noqa: E402

from ltkd_hf.data import apply_transforms, load_image_dataset  # noqa: E402
from ltkd_hf.evaluation import format_group_table, write_report  # noqa: E402
from ltkd_hf import ClassGroups  # noqa: E402
from ltkd_hf.hub import load_student  # noqa: E402
from recipe_args import DataArguments, parse_with_config  # noqa: E402
from steps import load_long_tailed, score, source_splits  # noqa: E402


@dataclass
class EvalArguments:
    model: str = field(default=None, metadata={"help": "Student folder or Hub id (required)."})
    output_dir: str = field(default="eval-report", metadata={"help": "Where report.json/report.md and plots go."})
    num_groups: int = field(default=3, metadata={"help": "K frequency groups of the report."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size."})


def recorded_class_counts(model: str) -> list[int] | None:
    """The training class counts a folder saved by ltkd_hf recorded, if any."""
    path = Path(model) / "config.json" if Path(model).is_dir() else Path(hf_hub_download(model, "config.json"))
    return json.loads(path.read_text()).get("ltkd", {}).get("class_counts")


def main(argv: list[str] | None = None) -> dict:
    data_args, eval_args = parse_with_config((DataArguments, EvalArguments), argv)
    if eval_args.model is None:
        raise ValueError("--model is required: a student folder (e.g. outputs/ltkd-demo/student) or a Hub id.")
    model = load_student(eval_args.model)
    counts = recorded_class_counts(eval_args.model) or load_long_tailed(data_args).class_counts
    split = load_image_dataset(
        data_args.dataset,
        split=source_splits(data_args),
        image_column=data_args.image_column,
        label_column=data_args.label_column,
    )["test"]
    test = apply_transforms({"test": split}, resolve_data_config(model=model))["test"]
    report, _ = score(model, test, counts, eval_args.num_groups, eval_args.batch_size)
    groups = ClassGroups.from_counts(counts, eval_args.num_groups)
    write_report(
        eval_args.output_dir,
        {eval_args.model: report},
        class_counts=counts,
        groups=groups,
        metadata={"model": eval_args.model, "dataset": data_args.dataset, "split": data_args.test_split or "test"},
    )
    print(format_group_table({eval_args.model: report}, groups.names))
    return report


if __name__ == "__main__":
    main()
