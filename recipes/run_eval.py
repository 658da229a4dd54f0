"""Evaluate any saved student (a folder or a Hub id) on any split: overall, per-group and per-class accuracy.

    python recipes/run_eval.py --model outputs/ltkd-demo/student --dataset builtin:digits --output_dir eval-out

The groups come from the training class counts recorded in the folder's config.json; for a model trained
elsewhere, they are rebuilt from --dataset/--imbalance_factor/--lt_seed as in training. A model whose classes
(count or names, in order) differ from the dataset's is refused.
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
from transformers import AutoModelForImageClassification  # noqa: E402

from ltkd_hf import DistillationConfig, DistillationTrainer, SplitInfo  # noqa: E402
from ltkd_hf.data import apply_transforms, collate_fn, load_image_dataset  # noqa: E402
from ltkd_hf.evaluation import format_group_table  # noqa: E402
from ltkd_hf.models import unwrap_timm  # noqa: E402
from recipe_args import DataArguments, parse_with_config  # noqa: E402
from steps import load_long_tailed, source_splits  # noqa: E402


@dataclass
class EvalArguments:
    model: str = field(default=None, metadata={"help": "Student folder or Hub id (required)."})
    output_dir: str = field(default="eval-report", metadata={"help": "Where report.json/report.md and plots go."})
    num_groups: int = field(default=3, metadata={"help": "K frequency groups of the report."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size."})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")


def recorded_config(model: str) -> dict:
    """The config.json of a student folder or Hub id."""
    path = Path(model) / "config.json" if Path(model).is_dir() else Path(hf_hub_download(model, "config.json"))
    return json.loads(path.read_text())


def recorded_class_counts(config: dict) -> list[int] | None:
    """The training class counts recorded in the config.json of a folder saved by ltkd_hf, if any."""
    settings = config.get("ltkd", {}).get("settings") or {}
    return settings.get("data", {}).get("class_counts")


def main(argv: list[str] | None = None) -> dict:
    data_args, eval_args = parse_with_config((DataArguments, EvalArguments), argv)
    if eval_args.model is None:
        raise ValueError("--model is required: a student folder (e.g. outputs/ltkd-demo/student) or a Hub id.")
    test = load_image_dataset(
        data_args.dataset,
        split=source_splits(data_args),
        image_column=data_args.image_column,
        label_column=data_args.label_column,
    )["test"]
    names = list(test.features["label"].names)
    recorded = recorded_config(eval_args.model)
    model_names = recorded.get("label_names")
    if model_names is not None and [str(n) for n in model_names] != names:
        raise ValueError(
            f"--model {eval_args.model} predicts {len(model_names)} classes {model_names[:10]}, but --dataset "
            f"{data_args.dataset} has {len(names)} classes {names[:10]} (names in class-index order must be equal); "
            "evaluate the model on the dataset it was trained for."
        )
    counts = recorded_class_counts(recorded) or list(load_long_tailed(data_args).split_info.class_counts)
    model = AutoModelForImageClassification.from_pretrained(eval_args.model).eval()
    if model.config.num_labels != len(names):
        raise ValueError(
            f"--model {eval_args.model} has {model.config.num_labels} outputs but --dataset {data_args.dataset} has "
            f"{len(names)} classes; evaluate the model on the dataset it was trained for."
        )
    info = SplitInfo.from_dataset(test)  # source and the held-out split's real name
    info = SplitInfo(counts, names, info.source, info.source_kind, info.train_split, info.test_split)
    prepared = apply_transforms({"test": test}, resolve_data_config(model=unwrap_timm(model)))["test"]
    config = DistillationConfig(
        output_dir=eval_args.output_dir,
        distill_loss="ce",
        num_groups=eval_args.num_groups,
        per_device_eval_batch_size=eval_args.batch_size,
        report_to="none",
    )
    trainer = DistillationTrainer(model, None, config, split_info=info, eval_dataset=prepared, data_collator=collate_fn)
    reports = trainer.write_report(name=eval_args.model)
    print(format_group_table(reports, trainer.groups.names))
    return reports[eval_args.model]


if __name__ == "__main__":
    main()
