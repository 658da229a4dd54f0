"""What `DistillationTrainer` is given, checked before it trains (the arguments, the training split, the models'
classes, the in-memory datasets), and the in-memory batches made into the model's ``pixel_values`` on the device."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .config import DistillationConfig
from .data.in_memory import BatchAugmentation, InMemoryImages
from .data.split_info import SplitInfo
from .models.loading import check_teacher_matches, label_names_of, unwrap_timm
from .teacher_cache import check_cacheable

__all__ = [
    "DeviceBatches", "check_best_metric", "check_labelled", "check_run_length", "checked_split_info",
    "describe_teacher", "evaluation_metrics",
]


def _num_classes(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_labels", None) is not None:
        return int(config.num_labels)
    return getattr(unwrap_timm(model), "num_classes", None)


def checked_split_info(
    args: DistillationConfig,
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    split_info: SplitInfo | None,
    class_counts: Sequence[int] | None,
    train_dataset: Any,
) -> SplitInfo:
    """The training split (`_split_info`), once the arguments are checked: ``args`` a `DistillationConfig`, a teacher
    unless the loss is ``"ce"`` (which takes no warm-up), and the student's and teacher's classes the split's, in its
    order."""
    if not isinstance(args, DistillationConfig):
        raise ValueError(f"args must be a DistillationConfig, got {type(args).__name__}.")
    if teacher is None and args.distill_loss != "ce":
        raise ValueError(
            f"teacher_model is None but distill_loss={args.distill_loss!r} needs a teacher: pass a frozen timm "
            "teacher (ltkd_hf.models.load_teacher), or distill_loss='ce' to train with cross-entropy alone."
        )
    if args.distill_loss == "ce" and args.warmup_epochs:
        raise ValueError(
            f"--warmup_epochs {args.warmup_epochs:g} with --distill_loss ce: the warm-up ramps up the distillation "
            "term, and cross-entropy alone has none, so it would change nothing; pass --warmup_epochs 0, or choose a "
            "distillation loss."
        )
    info = _split_info(split_info, class_counts, train_dataset, student)
    _check_student(student, info)
    if teacher is not None:
        check_teacher_matches(teacher, num_classes=info.num_classes, label_names=list(info.label_names))
    return info


def check_labelled(**datasets: Any) -> None:
    """Each named dataset that lists its columns (a ``datasets.Dataset``) holds its labels: without them the first
    training step, or the evaluation, fails deep in the data pipeline."""
    for name, dataset in datasets.items():
        columns = getattr(dataset, "column_names", None)
        if isinstance(columns, list) and not {"label", "labels"} & set(columns):
            raise ValueError(
                f"{name} has the columns {columns} and no 'label' column, so its loss or accuracy cannot be computed; "
                "pass the split with its labels (load_image_dataset keeps them in 'label')."
            )


def run_length(args: DistillationConfig, num_train: int) -> tuple[int, float]:
    """The optimizer steps and epochs a run of ``args`` makes over ``num_train`` training images (as Trainer counts
    them: whole accumulation windows per epoch)."""
    per_step = args.per_device_train_batch_size * args.world_size
    batches = num_train // per_step if args.dataloader_drop_last else -(-num_train // per_step)
    steps_per_epoch = batches // args.gradient_accumulation_steps
    if args.max_steps > 0:
        epochs = args.max_steps / steps_per_epoch if steps_per_epoch else float("inf")
        return args.max_steps, epochs
    return int(steps_per_epoch * args.num_train_epochs + 0.999999), args.num_train_epochs


def check_run_length(args: DistillationConfig, num_train: int) -> None:
    """Refuse a run that would make no optimizer step, whose distillation warm-up never ends, or whose step decay of
    the learning rate comes after its last step."""
    steps, epochs = run_length(args, num_train)
    if steps <= 0:
        raise ValueError(
            f"{num_train} training images in batches of --per_device_train_batch_size "
            f"{args.per_device_train_batch_size} x {args.world_size} processes with --gradient_accumulation_steps "
            f"{args.gradient_accumulation_steps} make no optimizer step; lower the batch size or the accumulation."
        )
    if args.distill_loss != "ce" and args.warmup_epochs >= epochs:
        raise ValueError(
            f"--warmup_epochs {args.warmup_epochs:g} is not shorter than the run ({epochs:.3g} epochs, {steps} "
            "steps): the distillation term would stay below full weight throughout (the students of different "
            "losses would barely differ); pass --warmup_epochs 0 or a shorter warm-up, or train longer."
        )
    late = [e for e in args.lr_decay_epochs or () if e >= epochs]
    if late:
        raise ValueError(
            f"--lr_decay_epochs {args.lr_decay_epochs}: {late} come at or after the end of the run ({epochs:g} "
            f"epochs), so the learning rate would never be decayed there; pass decay epochs below {epochs:g}, train "
            "longer, or pass --lr_decay_epochs none."
        )


def evaluation_metrics(group_names: Sequence[str]) -> list[str]:
    """What `DistillationTrainer`'s evaluation reports (each as ``eval_<name>``), beside Trainer's speed: the
    student's cross-entropy as the loss and as ``ce``, its accuracy overall and per group."""
    return ["loss", "ce", "accuracy", *(f"accuracy_{name}" for name in group_names)]


def check_best_metric(args: DistillationConfig, group_names: Sequence[str]) -> None:
    """``metric_for_best_model`` names a metric of the trainer's own evaluation: Trainer looks it up only after the
    first evaluation, and a misspelt one stopped the run there with a KeyError."""
    metric = args.metric_for_best_model
    names = evaluation_metrics(group_names)
    if metric is not None and metric.removeprefix("eval_") not in names:
        raise ValueError(f"--metric_for_best_model {metric}: the evaluation reports {names} (also written "
                         "eval_<name>), and Trainer would stop at the first evaluation without it; choose one of them.")


def _split_info(
    split_info: SplitInfo | None, class_counts: Sequence[int] | None, train_dataset: Any, model: torch.nn.Module
) -> SplitInfo:
    """``split_info``, or one made from ``class_counts`` (named by the student's labels) or from the labels of a
    ``train_dataset`` with a ``ClassLabel`` column: counts and names only, the split's construction unrecorded."""
    if split_info is not None:
        if class_counts is not None:
            raise ValueError("Pass split_info or class_counts, not both: split_info carries the class counts.")
        return split_info
    if class_counts is not None:
        names = label_names_of(model)
        return SplitInfo.from_counts(class_counts, names if names and len(names) == len(class_counts) else None)
    if hasattr(train_dataset, "features") and hasattr(train_dataset, "info"):
        return SplitInfo.from_dataset(train_dataset)
    raise ValueError(
        "Pass split_info (ltkd_hf.data.ImageSplits.split_info, which records how the split was made) or "
        "class_counts (training images per class), or a datasets.Dataset train_dataset with a ClassLabel column."
    )


def _check_student(model: torch.nn.Module, info: SplitInfo) -> None:
    """The student scores the split's classes: as many outputs, and its label names (if any) in the same order."""
    num_classes = _num_classes(model)
    if num_classes != info.num_classes:
        raise ValueError(
            f"The training split has {info.num_classes} classes but the student has {num_classes} outputs; "
            f"build the student with num_classes={info.num_classes} or pass the counts of the dataset it is "
            "trained on."
        )
    names = label_names_of(model)
    if names is not None and [str(n) for n in names] != list(info.label_names):
        raise ValueError(
            f"The student's label names {names[:5]}... differ from the dataset's {list(info.label_names)[:5]}...; "
            "build the student with label_names=<the dataset's class names> in class-index order."
        )


def describe_teacher(teacher: torch.nn.Module) -> str:
    """A teacher's name for the card when the caller gives none: its architecture (where its weights came from
    is only known to the caller: pass ``teacher_name``)."""
    return unwrap_timm(teacher).pretrained_cfg.get("architecture") or type(unwrap_timm(teacher)).__name__


class DeviceBatches:
    """Batches of uint8 ``images`` (`ltkd_hf.data.InMemoryImages`) made into ``pixel_values`` on ``device`` by
    ``augmentation`` (`ltkd_hf.data.BatchAugmentation` of the student's ``pretrained_cfg``; ``None``: off).

    Training batches are augmented (random crop with zero padding, flip, per sample) and normalised, and record
    each sample's outcome number as ``augmentation_outcome``; evaluation batches are normalised only. The
    augmentation draws from the device's default generator (seeded by ``args.seed``, plus the process index
    with several processes; saved in checkpoints).
    """

    def __init__(self, augmentation: BatchAugmentation | None, device: torch.device) -> None:
        self.augmentation, self.device = augmentation, device

    def check(self, train_dataset: Any, eval_dataset: Any) -> None:
        """In-memory uint8 datasets that could not become pixel_values fail now, not mid-run (``eval_dataset``: one
        or a dict of them)."""
        evaluation = list(eval_dataset.values()) if isinstance(eval_dataset, Mapping) else [eval_dataset]
        in_memory = [d for d in [train_dataset, *evaluation] if isinstance(d, InMemoryImages)]
        if not in_memory:
            return
        if self.augmentation is None:
            raise ValueError(
                "The datasets hold uint8 images (ltkd_hf.data.InMemoryImages), which become the model's "
                "pixel_values on the device only with device_augmentation=True; pass device_augmentation=True "
                "(--device_augmentation true), or datasets that yield pixel_values (ltkd_hf.data.apply_transforms)."
            )
        if isinstance(train_dataset, InMemoryImages) and not train_dataset.train:
            raise ValueError(
                "train_dataset holds the evaluation decoding (InMemoryImages.from_dataset(..., train=False)); decode "
                "the training split with train=True (the resize the training transform applies before its random "
                "crop), e.g. with ltkd_hf.data.in_memory_datasets."
            )
        for dataset in in_memory:  # a split decoded for another input size fails now, not mid-run
            self.augmentation.check(dataset.images[:1])

    def __call__(self, inputs: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """Replace a batch's uint8 ``images`` by ``pixel_values``, in place; batches without ``images`` pass."""
        if "images" not in inputs:
            return inputs
        if self.augmentation is None:
            raise ValueError(
                "The batch carries uint8 'images' (ltkd_hf.data.InMemoryImages) but device_augmentation is off, so "
                "nothing turns them into pixel_values; pass device_augmentation=True (--device_augmentation true), "
                "or datasets that yield pixel_values (ltkd_hf.data.apply_transforms)."
            )
        if "pixel_values" in inputs:
            raise ValueError(
                "The batch carries both uint8 'images' and 'pixel_values'; a dataset should yield one of them "
                "(InMemoryImages yields images, apply_transforms pixel_values)."
            )
        images = inputs.pop("images").to(self.device, non_blocking=True)
        inputs["pixel_values"], outcome = self.augmentation(images, train=train, return_outcomes=True)
        if outcome is not None:  # what a teacher-logit cache is looked up by, with the batch's "index"
            inputs["augmentation_outcome"] = outcome
        return inputs

    def check_cacheable(self, train_dataset: Any) -> None:
        """A teacher-logit cache is looked up by each training image's row and the crop-and-flip outcome drawn
        for it here: refuse training data or an augmentation that cannot give both."""
        if self.augmentation is None or not isinstance(train_dataset, InMemoryImages):
            raise ValueError(
                "teacher_cache=True looks the teacher's logits up by each training image's row and the crop-and-flip "
                "outcome the device augmentation draws for it, so it needs device_augmentation=True and a "
                "train_dataset of uint8 images (ltkd_hf.data.InMemoryImages, batched by collate_images); got "
                f"device_augmentation={self.augmentation is not None} and a {type(train_dataset).__name__}. In the "
                "recipes add --in_memory_data true; or drop teacher_cache (--teacher_cache false)."
            )
        check_cacheable(self.augmentation)
