"""`DistillationConfig` and `DistillationTrainer`: LTKD (or any registered loss) on `transformers.Trainer`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from transformers import EvalPrediction, Trainer, TrainingArguments

from .evaluation.metrics import group_accuracy
from .groups import ClassGroups
from .losses import available_losses, create_loss
from .models.loading import check_teacher_matches, unwrap_timm

logger = logging.getLogger(__name__)

__all__ = ["DistillationConfig", "DistillationTrainer"]

_TEACHER_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class DistillationConfig(TrainingArguments):
    """`TrainingArguments` plus the distillation objective.

    The student minimises ``ce_weight * CE(student, y) + ramp(epoch) * distill_loss(student, teacher)``, where
    ``ramp`` grows linearly from 0 to 1 over ``warmup_epochs``. Loss hyperparameters left at ``None`` take the
    chosen loss's own default (LTKD: T=4, alpha=6, beta=6; DKD: T=4, alpha=1, beta=8; ...), so switching
    ``distill_loss`` never silently carries another method's weights.
    """

    distill_loss: str = field(
        default="ltkd",
        metadata={"help": "Distillation loss: one of the registered names (ltkd, kd, dkd, dist, bkd, ce)."},
    )
    temperature: float | None = field(
        default=None, metadata={"help": "Softmax temperature T (> 0). Default: the loss's own (LTKD 4.0)."}
    )
    alpha: float | None = field(
        default=None,
        metadata={"help": "LTKD cross-group weight (DKD: target weight). Default: the loss's own (LTKD 6.0)."},
    )
    beta: float | None = field(
        default=None,
        metadata={"help": "LTKD within-group weight (DKD: non-target weight). Default: the loss's own (LTKD 6.0)."},
    )
    ce_weight: float = field(
        default=1.0, metadata={"help": "Weight of the student's cross-entropy on the labels (>= 0)."}
    )
    num_groups: int = field(
        default=3,
        metadata={"help": "K, the number of frequency groups (3 = head/medium/tail, 33%/34%/33% of classes)."},
    )
    rebalance: bool | None = field(
        default=None, metadata={"help": "LTKD: rebalance the teacher's cross-group mass over the batch (default on)."}
    )
    reweight: bool | None = field(
        default=None,
        metadata={"help": "LTKD: weight every within-group KL by beta instead of the teacher's mass (default on)."},
    )
    warmup_epochs: float = field(
        default=0.0,
        metadata={
            "help": "Epochs over which the distillation term ramps linearly from 0 to full weight (CIFAR recipes: 20)."
        },
    )
    sync_group_stats: bool = field(
        default=True,
        metadata={"help": "All-reduce LTKD's batch group sums across processes (global-batch rebalancing)."},
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={
            "help": "Teacher weights dtype: auto (bf16/fp16 on GPU when mixed precision is on, else float32), "
            "float32, bfloat16 or float16."
        },
    )
    channels_last: bool = field(
        default=False, metadata={"help": "Run student and teacher in channels-last memory format."}
    )
    check_teacher_finite: bool = field(
        default=True,
        metadata={
            "help": "Stop with the step number when the teacher's logits hold NaN/inf (one host sync per step, "
            "after the backward is queued, where Trainer's logging_nan_inf_filter syncs too)."
        },
    )
    lr_decay_epochs: list[float] | None = field(
        default=None,
        metadata={
            "help": "Step schedule: multiply the learning rate by lr_decay_rate at each of these epochs "
            "(CIFAR recipes: 150 180 210). Replaces lr_scheduler_type; needs epoch-based training."
        },
    )
    lr_decay_rate: float = field(default=0.1, metadata={"help": "Factor of each lr_decay_epochs step (0 < rate <= 1)."})

    # TrainingArguments defaults that image distillation needs.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep all dataset columns: image transforms produce pixel_values lazily."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "Input keys that hold the labels."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        names = available_losses()
        if self.distill_loss not in names:
            raise ValueError(f"distill_loss={self.distill_loss!r} is not a registered loss; choose one of {names}.")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        for name in ("alpha", "beta", "ce_weight", "warmup_epochs"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if not isinstance(self.num_groups, int) or self.num_groups < 1:
            raise ValueError(f"num_groups must be an integer >= 1, got {self.num_groups!r}.")
        if self.lr_decay_epochs is not None:
            if self.max_steps > 0:
                raise ValueError(
                    f"lr_decay_epochs={self.lr_decay_epochs} needs epoch-based training, but "
                    f"max_steps={self.max_steps}; set num_train_epochs instead of max_steps."
                )
            if any(not e > 0 for e in self.lr_decay_epochs):
                raise ValueError(f"lr_decay_epochs must hold positive epochs, got {self.lr_decay_epochs}.")
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"lr_decay_rate must be in (0, 1], got {self.lr_decay_rate}.")
        if self.teacher_dtype not in _TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype must be one of {sorted(_TEACHER_DTYPES)}, got {self.teacher_dtype!r}.")

    def loss_hyperparameters(self) -> dict[str, Any]:
        """The loss hyperparameters the user set (``None`` ones are left to the loss's defaults)."""
        values = {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "beta": self.beta,
            "rebalance": self.rebalance,
            "reweight": self.reweight,
        }
        if self.distill_loss == "ltkd":
            values["sync_across_processes"] = self.sync_group_stats
        return {k: v for k, v in values.items() if v is not None}


def _num_classes(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_labels", None) is not None:
        return int(config.num_labels)
    return getattr(unwrap_timm(model), "num_classes", None)


def _label_names(model: torch.nn.Module) -> list[str] | None:
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if not id2label:
        return None
    names = [id2label[i] for i in range(len(id2label))]
    # transformers fills unnamed labels with LABEL_i: those say nothing about the dataset's order.
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


class DistillationTrainer(Trainer):
    """`transformers.Trainer` that distills a student from a frozen teacher.

    The teacher never enters the optimizer or a checkpoint: it is frozen, pinned in eval mode (BatchNorm
    statistics never move), prepared by accelerate for inference only and run under ``no_grad``. The loss is a
    per-batch mean, so Trainer divides it by the gradient-accumulation steps (``loss_is_scaled_for_ga =
    False``). Evaluation is a student-only pass: cross-entropy plus overall and per-group accuracy.

    Args:
        model: the student (e.g. from `ltkd_hf.models.create_student`); it receives ``pixel_values``.
        teacher_model: a timm model (e.g. from `ltkd_hf.models.load_teacher`); ``None`` only with
            ``distill_loss="ce"``, which trains the model with cross-entropy alone (the biased teacher, a
            baseline).
        args: a `DistillationConfig`.
        class_counts: training images per class; with ``args.num_groups`` they define the groups.
        groups: explicit `ClassGroups` instead of ``class_counts`` (BKD still needs ``class_counts``).
        teacher_input_transform: maps the student's ``pixel_values`` to the teacher's input when the two
            normalise differently (see `ltkd_hf.data.normalization_converter`).
        **kwargs: everything else `transformers.Trainer` takes (datasets, collator, callbacks, ...).
    """

    # Our loss is a per-batch mean: let Trainer divide it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: torch.nn.Module,
        teacher_model: torch.nn.Module | None,
        args: DistillationConfig,
        *,
        class_counts: Sequence[int] | None = None,
        groups: ClassGroups | None = None,
        teacher_input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, DistillationConfig):
            raise ValueError(f"args must be a DistillationConfig, got {type(args).__name__}.")
        if teacher_model is None and args.distill_loss != "ce":
            raise ValueError(
                f"teacher_model is None but distill_loss={args.distill_loss!r} needs a teacher: pass a frozen timm "
                "teacher (ltkd_hf.models.load_teacher), or distill_loss='ce' to train with cross-entropy alone."
            )
        if groups is None and class_counts is None:
            raise ValueError("Pass class_counts (training images per class) or groups (a ClassGroups).")
        if groups is None:
            groups = ClassGroups.from_counts(class_counts, args.num_groups)
        num_classes = _num_classes(model)
        sizes = {"class_counts": None if class_counts is None else len(class_counts), "groups": groups.num_classes}
        for what, n in sizes.items():
            if n is not None and n != num_classes:
                raise ValueError(
                    f"{what} covers {n} classes but the student has {num_classes} outputs; build the student with "
                    f"num_classes={n} or pass the counts of the dataset it is trained on."
                )
        if teacher_model is not None:
            check_teacher_matches(unwrap_timm(teacher_model), num_classes=num_classes, label_names=_label_names(model))

        self.groups = groups
        self.loss_fn = create_loss(
            args.distill_loss, groups=groups, class_counts=class_counts, **args.loss_hyperparameters()
        )
        kwargs.setdefault("compute_metrics", self._group_metrics)
        kwargs.setdefault("preprocess_logits_for_metrics", lambda logits, labels: logits.argmax(dim=-1))
        super().__init__(model=model, args=args, **kwargs)
        if self.accelerator.num_processes > 1 and self.accelerator.distributed_type == DistributedType.NO:
            raise ValueError(
                f"{self.accelerator.num_processes} processes are running, but accelerate set up no distributed "
                "training, so each process would train its own copy of the student. On CPU pass use_cpu=True "
                "(--use_cpu true --ddp_backend gloo); on GPUs launch with accelerate launch --multi_gpu or torchrun."
            )
        # Older transformers decide the GA scaling from this flag alone; our loss takes no loss kwargs.
        self.model_accepts_loss_kwargs = False

        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.teacher = None if teacher_model is None else self._prepare_teacher(teacher_model)
        self.teacher_input_transform = teacher_input_transform
        self.loss_fn.to(self.args.device)
        self._teacher_finite: torch.Tensor | None = None
        self._component_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._component_counts = {"train": 0, "eval": 0}
        logger.info(
            "Objective: %s * CE + ramp(%s warmup epochs) * [%s]; groups %s sizes %s",
            args.ce_weight,
            args.warmup_epochs,
            self.loss_fn.describe(),
            list(groups.names),
            groups.sizes,
        )

    # -- teacher -------------------------------------------------------------------------------
    def _prepare_teacher(self, teacher: torch.nn.Module) -> torch.nn.Module:
        teacher.requires_grad_(False)
        teacher.eval()
        dtype = self._teacher_dtype()
        if dtype is not None:
            teacher.to(dtype)
        if self.args.channels_last:
            teacher.to(memory_format=torch.channels_last)
        teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        if self.args.torch_compile:
            teacher = torch.compile(teacher, backend=self.args.torch_compile_backend, mode=self.args.torch_compile_mode)
        return teacher

    def _teacher_dtype(self) -> torch.dtype | None:
        if self.args.teacher_dtype != "auto":
            return _TEACHER_DTYPES[self.args.teacher_dtype]
        # The accelerator's precision, set by --bf16/--fp16 or by `accelerate launch --mixed_precision`.
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.accelerator.mixed_precision)
        return half if self.args.device.type == "cuda" else None

    @torch.no_grad()
    def teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's float32 logits for the student's inputs."""
        if self.teacher.training:  # something called .train() on the teacher: pin it back
            self.teacher.eval()
        if self.teacher_input_transform is not None:
            pixel_values = self.teacher_input_transform(pixel_values)
        dtype = next(self.teacher.parameters()).dtype
        out = self.teacher(pixel_values.to(dtype))
        logits = (out.logits if hasattr(out, "logits") else out).float()
        if self.args.check_teacher_finite:  # a device tensor: read once the step's backward is queued
            self._teacher_finite = torch.isfinite(logits).all()
        return logits

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite, self._teacher_finite = self._teacher_finite, None
        if finite is not None and not finite:  # before the optimizer step: the student never trains on NaN
            raise ValueError(
                f"The teacher produced non-finite (NaN/inf) logits at step {self.state.global_step}; training "
                "stopped before the optimizer used them. Check the teacher checkpoint, its input normalisation "
                "and teacher_dtype."
            )
        return loss

    # -- loss ----------------------------------------------------------------------------------
    def distill_ramp(self) -> float:
        """Weight of the distillation term now: linear from 0 to 1 over ``warmup_epochs``."""
        if self.args.warmup_epochs <= 0:
            return 1.0
        return min((self.state.epoch or 0.0) / self.args.warmup_epochs, 1.0)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if self.args.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        out = model(pixel_values=pixel_values)
        student_logits = out.logits if hasattr(out, "logits") else out
        ce = F.cross_entropy(student_logits.float(), labels)
        mode = "train" if model.training else "eval"
        terms = {"ce": ce}
        if mode == "train" and self.teacher is not None:
            distill = self.loss_fn(student_logits, self.teacher_logits(pixel_values), labels)
            ramp = self.distill_ramp()
            loss = self.args.ce_weight * ce + ramp * distill["loss"]
            terms.update({k: v for k, v in distill.items() if k != "loss"})
            terms["distill"] = distill["loss"]
        elif mode == "train":  # distill_loss="ce": cross-entropy alone
            loss = self.args.ce_weight * ce
        else:  # student-only evaluation: its CE is the eval loss, its logits the only output
            loss = ce
        self._accumulate(mode, terms)
        return (loss, {"logits": student_logits}) if return_outputs else loss

    def _accumulate(self, mode: str, terms: dict[str, torch.Tensor]) -> None:
        sums = self._component_sums[mode]
        for name, value in terms.items():
            value = value.detach().float()
            sums[name] = sums[name] + value if name in sums else value
        self._component_counts[mode] += 1

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """Trainer's scheduler, or the step schedule of ``lr_decay_epochs`` (x ``lr_decay_rate`` at each)."""
        if self.args.lr_decay_epochs is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        steps_per_epoch = num_training_steps / self.args.num_train_epochs
        milestones = [round(e * steps_per_epoch) for e in self.args.lr_decay_epochs]
        rate = self.args.lr_decay_rate
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer or self.optimizer, lambda step: rate ** sum(step >= m for m in milestones)
        )
        return self.lr_scheduler

    # -- logging and metrics -------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss component, averaged over the logging window (and across processes)."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train" if "loss" in logs else None
        if mode is not None and self._component_counts[mode]:
            prefix = "eval_" if mode == "eval" else ""
            count = self._component_counts[mode]
            for name, total in sorted(self._component_sums[mode].items()):
                logs[prefix + name] = self.accelerator.reduce(total / count, reduction="mean").item()
            self._component_sums[mode], self._component_counts[mode] = {}, 0
        super().log(logs, start_time)

    def _group_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        predictions = np.asarray(prediction.predictions)
        if predictions.ndim == 2:  # logits, when preprocess_logits_for_metrics was replaced
            predictions = predictions.argmax(-1)
        return group_accuracy(predictions, np.asarray(prediction.label_ids), self.groups)
