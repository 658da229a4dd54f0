"""The steps the recipes share: long-tailed data, a cross-entropy run, scoring, the student folder."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset
from timm.data import resolve_data_config
from transformers.trainer_utils import get_last_checkpoint

from ltkd_hf import DistillationConfig, DistillationTrainer
from ltkd_hf.data import (
    apply_transforms,
    collate_fn,
    get_class_counts,
    load_image_dataset,
    make_long_tailed,
    normalization_converter,
)
from ltkd_hf.evaluation import evaluation_report, predict_logits
from ltkd_hf.hub import save_student
from ltkd_hf.models import unwrap_timm

from recipe_args import DataArguments

logger = logging.getLogger("ltkd_hf.recipes")


@dataclass
class LongTailedData:
    """The long-tailed training split, the balanced test split, and what describes them."""

    train: Dataset
    test: Dataset
    class_counts: list[int]
    label_names: list[str]
    description: dict


def source_splits(args: DataArguments) -> str | dict[str, str] | None:
    """``load_image_dataset``'s ``split``: the held-out split's name, or both names, or None to detect them."""
    if args.train_split is None:
        return args.test_split
    if args.test_split is None:
        raise ValueError(
            f"--train_split {args.train_split!r} needs --test_split too: the name of the balanced held-out split."
        )
    return {"train": args.train_split, "test": args.test_split}


def load_long_tailed(args: DataArguments) -> LongTailedData:
    """Load ``args.dataset`` and build its long-tailed training split; the test split stays balanced."""
    splits = load_image_dataset(
        args.dataset, split=source_splits(args), image_column=args.image_column, label_column=args.label_column
    )
    test = splits["test"]
    train = make_long_tailed(
        splits["train"],
        args.imbalance_factor,
        seed=args.lt_seed,
        profile=args.lt_profile,
        exponent=args.lt_exponent,
        class_order_seed=args.class_order_seed,
    )
    counts = get_class_counts(train)
    names = list(train.features["label"].names)
    description = {
        "dataset": args.dataset,
        "imbalance_factor": args.imbalance_factor,
        "lt_seed": args.lt_seed,
        "lt_profile": args.lt_profile,
        "lt_exponent": args.lt_exponent,
        "class_order_seed": args.class_order_seed,
        "train_images": int(sum(counts)),
        "test_images": len(test),
        "num_classes": len(counts),
    }
    logger.info(
        "Long-tailed train split: %d images, %d classes, counts %d..%d",
        sum(counts),
        len(counts),
        max(counts),
        min(counts),
    )
    return LongTailedData(train, test, counts, names, description)


def with_model_transforms(data: LongTailedData, model: torch.nn.Module) -> tuple[Dataset, Dataset, dict]:
    """Train/test datasets that yield ``pixel_values`` prepared as ``model``'s pretrained_cfg asks."""
    data_config = resolve_data_config(model=unwrap_timm(model))
    prepared = apply_transforms({"train": data.train, "test": data.test}, data_config)
    return prepared["train"], prepared["test"], data_config


def stage_args(config: DistillationConfig, stage: str, **changes) -> DistillationConfig:
    """The run's arguments for one training stage, with its own checkpoint folder; stages are never pushed."""
    return dataclasses.replace(
        config, output_dir=os.path.join(config.output_dir, "checkpoints", stage), push_to_hub=False, **changes
    )


def cross_entropy_args(config: DistillationConfig, stage: str, **changes) -> DistillationConfig:
    """Arguments of a cross-entropy-only stage (the biased teacher, the CE student): no distillation terms."""
    none = dict(temperature=None, alpha=None, beta=None, rebalance=None, reweight=None, warmup_epochs=0.0)
    return stage_args(config, stage, distill_loss="ce", **{**none, **changes})


def last_checkpoint(args: DistillationConfig) -> str | None:
    """The stage's newest checkpoint, so re-running the same command resumes an interrupted run."""
    if not os.path.isdir(args.output_dir):
        return None
    return get_last_checkpoint(args.output_dir)


def train_stage(model, args: DistillationConfig, data: LongTailedData, teacher=None) -> DistillationTrainer:
    """Train ``model`` on the long-tailed split: distilled from ``teacher``, or with cross-entropy alone when it is
    None (the biased teacher, the CE student). Re-running resumes from the stage's last checkpoint. The trainer's
    ``eval_dataset`` is the balanced test split with ``model``'s transforms, its ``teacher_input_transform`` what
    the teacher needs on top."""
    train, test, data_config = with_model_transforms(data, model)
    to_teacher = None
    if teacher is not None:
        to_teacher = normalization_converter(data_config, resolve_data_config(model=unwrap_timm(teacher)))
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        class_counts=data.class_counts,
        teacher_input_transform=to_teacher,
        data_collator=collate_fn,
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(args))
    return trainer


def score(
    model, test: Dataset, class_counts, num_groups: int, batch_size: int, input_transform=None
) -> tuple[dict, np.ndarray]:
    """The evaluation report of ``model`` on the balanced test split, and its probabilities."""
    logits, labels = predict_logits(
        model, test, collate_fn=collate_fn, batch_size=batch_size, input_transform=input_transform
    )
    report = evaluation_report(logits.argmax(-1), labels, class_counts=class_counts, num_groups=num_groups)
    probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    return report, probs


def save_model_folder(model, folder: Path, label_names, extra_config: dict) -> None:
    """Write the canonical student folder on the main process only; every process waits for it."""
    state = PartialState()
    if state.is_main_process:
        save_student(
            model,
            folder,
            label_names=label_names,
            extra_config=extra_config,
            data_config=resolve_data_config(model=unwrap_timm(model)),
        )
    state.wait_for_everyone()


def close_processes() -> None:
    """End a multi-process run cleanly: free the DDP-wrapped models (their gloo/NCCL reducers) while the process
    group is alive, then close the group on every process together; in another order the exit can abort
    ("terminate called without an active exception")."""
    gc.collect()
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
