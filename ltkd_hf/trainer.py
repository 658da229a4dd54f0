"""`DistillationTrainer`: LTKD (or any registered loss) on `transformers.Trainer`, owning its artefacts.

This module holds the training side (the frozen teacher, the gradient-accumulation window, the loss and its
logging); `trainer_artefacts` holds what a run leaves behind: ``save_model()`` and every checkpoint write the one
folder timm, transformers and ``pipeline`` load, ``write_report()`` scores student and teacher from one
``predict()`` pass, ``create_model_card()`` writes the group card and ``push_to_hub()`` pushes the folder with it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from timm.data import resolve_data_config
from transformers import EvalPrediction, Trainer

from .config import TEACHER_DTYPES, DistillationConfig
from .data.in_memory import BatchAugmentation, InMemoryImages
from .data.split_info import SplitInfo
from .data.transforms import normalization_converter
from .evaluation.metrics import group_accuracy
from .losses import capture_features, create_loss, log_class_prior, logit_adjusted_cross_entropy
from .models.loading import check_teacher_matches, unwrap_timm
from .trainer_artefacts import LOSS_STATE_NAME, RunArtefactsMixin

logger = logging.getLogger(__name__)

__all__ = ["DistillationConfig", "DistillationTrainer", "LOSS_STATE_NAME"]



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


def _describe_teacher(teacher: torch.nn.Module) -> str:
    """A teacher's name for the card when the caller gives none: its architecture (where its weights came from
    is only known to the caller: pass ``teacher_name``)."""
    return unwrap_timm(teacher).pretrained_cfg.get("architecture") or type(unwrap_timm(teacher)).__name__


class DistillationTrainer(RunArtefactsMixin, Trainer):
    """`transformers.Trainer` that distills a student from a frozen teacher and owns the run's artefacts.

    The teacher never enters the optimizer or a checkpoint: it is frozen, pinned in eval mode (BatchNorm
    statistics never move), prepared by accelerate for inference only and run under ``no_grad``. The loss is a
    per-batch mean, so Trainer divides it by the gradient-accumulation steps (``loss_is_scaled_for_ga =
    False``). Losses with batch statistics (LTKD's group sums) see the whole optimizer step: the teacher's
    logits for a gradient-accumulation window are computed first and the statistics summed over the window and
    all processes. Evaluation is a student-only pass: cross-entropy plus overall and per-group accuracy.

    Feature losses (``requires_features``: ``reviewkd``, ``catkd``) read both models' stage features, recorded
    by `ltkd_hf.losses.capture_features` during the student's normal (DDP-wrapped) forward and a teacher
    forward run with it in `compute_loss` for each micro-batch (no window precompute: they have no batch
    statistics). A loss's trainable modules (ReviewKD's ABFs) are initialised from ``args.seed`` (the same in
    every process), trained by the same optimizer in their own parameter groups (the student's weight-decay
    rule), clipped together with the student, follow its train/eval mode, have their gradients averaged across
    processes once per optimizer step (they are outside the DDP model), and are saved in each checkpoint as
    ``distill_loss.safetensors`` (restored on resume). The model folder and its Hub upload hold the student only
    (a checkpoint pushed with ``hub_strategy`` checkpoint / all_checkpoints carries the file, as it carries
    optimizer.pt).

    With ``args.device_augmentation``, batches of uint8 ``images`` (`ltkd_hf.data.InMemoryImages`) become
    ``pixel_values`` on the device (`ltkd_hf.data.BatchAugmentation` of the student's ``pretrained_cfg``): each
    training window's micro-batches are augmented (random crop with zero padding, flip, per sample) and
    normalised in `get_batch_samples`, before the teacher's logits are computed, so teacher and student see the
    same augmented batch; evaluation and predict batches are normalised only, before the forward pass. The
    augmentation draws from the device's default generator (seeded by ``args.seed``, saved in checkpoints).

    Args:
        model: the student (e.g. from `ltkd_hf.models.create_student`); it receives ``pixel_values``.
        teacher_model: a timm model (e.g. from `ltkd_hf.models.load_teacher`); ``None`` only with
            ``distill_loss="ce"``, which trains the model with cross-entropy alone (the biased teacher, a
            baseline).
        args: a `DistillationConfig`.
        split_info: the training split's classes, counts and construction (`ltkd_hf.data.SplitInfo`); read
            from ``train_dataset`` when it is a ``datasets.Dataset`` made by `ltkd_hf.data`.
        class_counts: training images per class, for a ``train_dataset`` that records none (e.g. a torch
            Dataset); the class names then come from the student's ``config.id2label``.
        teacher_name: where the teacher came from, for the card (a Hub id, a folder, "trained here ...");
            default: its Hub id or architecture.
        teacher_input_transform: maps the student's ``pixel_values`` to the teacher's input; by default derived
            from the two models' ``pretrained_cfg`` (mean/std, and size when they differ).
        **kwargs: everything else `transformers.Trainer` takes (datasets, collator, callbacks, ...).
    """

    # Our loss is a per-batch mean: let Trainer divide it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False
    _tag_names = ["ltkd_hf", "knowledge-distillation", "long-tailed"]

    def __init__(
        self,
        model: torch.nn.Module,
        teacher_model: torch.nn.Module | None,
        args: DistillationConfig,
        *,
        split_info: SplitInfo | None = None,
        class_counts: Sequence[int] | None = None,
        teacher_name: str | None = None,
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
        self.split_info = self._resolve_split_info(split_info, class_counts, kwargs.get("train_dataset"), model)
        self._check_student(model)
        if teacher_model is not None:
            check_teacher_matches(
                teacher_model, num_classes=self.split_info.num_classes, label_names=list(self.split_info.label_names)
            )
        self.groups = self.split_info.groups(args.num_groups)
        # Feature losses size their modules from the models; with the seed fixed here, trainable parts start alike
        # in every process and run, whatever the models' construction drew from the global generator.
        models = {} if teacher_model is None else {"student": unwrap_timm(model), "teacher": unwrap_timm(teacher_model)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            self.loss_fn = create_loss(
                args.distill_loss,
                groups=self.groups,
                class_counts=self.split_info.class_counts,
                **models,
                **args.distill_loss_kwargs,
            )
        self.teacher_name = None if teacher_model is None else teacher_name or _describe_teacher(teacher_model)
        student_cfg = resolve_data_config(model=unwrap_timm(model))
        self.batch_augmentation = BatchAugmentation.from_data_config(student_cfg) if args.device_augmentation else None
        evaluation = kwargs.get("eval_dataset")
        evaluation = list(evaluation.values()) if isinstance(evaluation, Mapping) else [evaluation]
        self._check_in_memory_datasets(args, [kwargs.get("train_dataset"), *evaluation], self.batch_augmentation)
        kwargs.setdefault("compute_metrics", self._group_metrics)
        kwargs.setdefault("preprocess_logits_for_metrics", self._predictions)
        super().__init__(model=model, args=args, **kwargs)
        if self.accelerator.num_processes > 1 and self.accelerator.distributed_type == DistributedType.NO:
            raise ValueError(
                f"{self.accelerator.num_processes} processes are running, but accelerate set up no distributed "
                "training, so each process would train its own copy of the student. On CPU pass use_cpu=True "
                "(--use_cpu true --ddp_backend gloo); on GPUs launch with accelerate launch --multi_gpu or torchrun."
            )
        # Older transformers decide the GA scaling from this flag alone; our loss takes no loss kwargs.
        self.model_accepts_loss_kwargs = False
        self._loss_parameters = [p for p in self.loss_fn.parameters() if p.requires_grad]
        unsupported = (DistributedType.DEEPSPEED, DistributedType.FSDP)
        if self._loss_parameters and self.accelerator.distributed_type in unsupported:
            raise ValueError(
                f"--distill_loss {args.distill_loss} trains modules of its own outside the model, which "
                f"{self.accelerator.distributed_type.value} does not shard or synchronise; train it with DDP "
                "(accelerate launch --multi_gpu, or torchrun) or on one device."
            )

        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if teacher_model is not None and teacher_input_transform is None:
            teacher_input_transform = normalization_converter(
                student_cfg, resolve_data_config(model=unwrap_timm(teacher_model))
            )
        self.teacher = None if teacher_model is None else self._prepare_teacher(teacher_model)
        self.teacher_input_transform = teacher_input_transform
        self.loss_fn.to(self.args.device)
        self._log_prior = None
        if args.ce_logit_adjustment:
            self._log_prior = log_class_prior(self.split_info.class_counts).to(self.args.device)
        self.report: dict[str, dict] | None = None
        self._report_mode = False
        self._window_statistics: torch.Tensor | None = None
        self._teacher_finite: torch.Tensor | None = None
        self._component_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._component_counts = {"train": 0, "eval": 0}
        logger.info(
            "Objective: %s * CE%s + ramp(%s warmup epochs) * [%s]; groups %s sizes %s",
            args.ce_weight,
            f" (logit-adjusted, tau={args.ce_logit_adjustment})" if args.ce_logit_adjustment else "",
            args.warmup_epochs,
            self.loss_fn.describe(),
            list(self.groups.names),
            self.groups.sizes,
        )

    @staticmethod
    def _resolve_split_info(
        split_info: SplitInfo | None, class_counts: Sequence[int] | None, train_dataset: Any, model: torch.nn.Module
    ) -> SplitInfo:
        if split_info is not None:
            if class_counts is not None:
                raise ValueError("Pass split_info or class_counts, not both: split_info carries the class counts.")
            return split_info
        if class_counts is not None:
            names = _label_names(model)
            return SplitInfo.from_counts(class_counts, names if names and len(names) == len(class_counts) else None)
        if hasattr(train_dataset, "features") and hasattr(train_dataset, "info"):
            return SplitInfo.from_dataset(train_dataset)
        raise ValueError(
            "Pass split_info (ltkd_hf.data.SplitInfo.from_dataset(train)) or class_counts (training images per "
            "class), or a train_dataset made with ltkd_hf.data (it records them)."
        )

    def _check_student(self, model: torch.nn.Module) -> None:
        num_classes, info = _num_classes(model), self.split_info
        if num_classes != info.num_classes:
            raise ValueError(
                f"The training split has {info.num_classes} classes but the student has {num_classes} outputs; "
                f"build the student with num_classes={info.num_classes} or pass the counts of the dataset it is "
                "trained on."
            )
        names = _label_names(model)
        if names is not None and [str(n) for n in names] != list(info.label_names):
            raise ValueError(
                f"The student's label names {names[:5]}... differ from the dataset's {list(info.label_names)[:5]}...; "
                "build the student with label_names=<the dataset's class names> in class-index order."
            )

    @staticmethod
    def _check_in_memory_datasets(
        args: DistillationConfig, datasets: list[Any], augmentation: BatchAugmentation | None
    ) -> None:
        """In-memory uint8 datasets (train first) that this trainer could not turn into pixel_values fail now."""
        in_memory = [d for d in datasets if isinstance(d, InMemoryImages)]
        if not in_memory:
            return
        if augmentation is None:
            raise ValueError(
                "The datasets hold uint8 images (ltkd_hf.data.InMemoryImages), which become the model's "
                "pixel_values on the device only with device_augmentation=True; pass device_augmentation=True "
                "(--device_augmentation true), or datasets that yield pixel_values (ltkd_hf.data.apply_transforms)."
            )
        if args.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True drops the in-memory batches' 'images' (the model's forward takes "
                "pixel_values, made from them on the device); set remove_unused_columns=False (the default of "
                "DistillationConfig)."
            )
        if isinstance(datasets[0], InMemoryImages) and not datasets[0].train:
            raise ValueError(
                "train_dataset holds the evaluation decoding (InMemoryImages.from_dataset(..., train=False)); decode "
                "the training split with train=True (the resize the training transform applies before its random "
                "crop), e.g. with ltkd_hf.data.in_memory_datasets."
            )
        for dataset in in_memory:  # a split decoded for another input size fails now, not mid-run
            augmentation.check(dataset.images[:1])

    # -- in-memory batches ---------------------------------------------------------------------
    def _device_inputs(self, inputs: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """Replace a batch's uint8 ``images`` by ``pixel_values`` on the device, in place: augmented and
        normalised for training, normalised for evaluation. Batches without ``images`` pass unchanged."""
        if "images" not in inputs:
            return inputs
        if self.batch_augmentation is None:
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
        images = inputs.pop("images").to(self.args.device, non_blocking=True)
        inputs["pixel_values"] = self.batch_augmentation(images, train=train)
        return inputs

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Trainer's evaluation step; a batch of uint8 ``images`` is normalised on the device first."""
        inputs = self._device_inputs(inputs, train=False)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # -- teacher -------------------------------------------------------------------------------
    def _prepare_teacher(self, teacher: torch.nn.Module) -> torch.nn.Module:
        teacher.requires_grad_(False)
        teacher.eval()
        dtype = self._teacher_dtype()
        if dtype is not None:
            teacher.to(dtype)
        if self.args.channels_last:
            teacher.to(memory_format=torch.channels_last)
        # With torch_compile on, accelerate compiles it here too, with the student's backend and mode.
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _teacher_dtype(self) -> torch.dtype | None:
        if self.args.teacher_dtype != "auto":
            return TEACHER_DTYPES[self.args.teacher_dtype]
        # The accelerator's precision, set by --bf16/--fp16 or by `accelerate launch --mixed_precision`.
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.accelerator.mixed_precision)
        return half if self.args.device.type == "cuda" else None

    @torch.no_grad()
    def teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's float32 logits for the student's inputs."""
        return self._teacher_forward(pixel_values)[0]

    @torch.no_grad()
    def _teacher_forward(
        self, pixel_values: torch.Tensor, capture: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """The teacher's float32 logits, and with ``capture`` (``capture_features`` keywords) its features."""
        if self.teacher.training:  # something called .train() on the teacher: pin it back
            self.teacher.eval()
        if self.teacher_input_transform is not None:
            pixel_values = self.teacher_input_transform(pixel_values)
        if self.args.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        dtype = next(self.teacher.parameters()).dtype
        features = None
        if capture is None:
            out = self.teacher(pixel_values.to(dtype))
        else:
            with capture_features(self.teacher, **capture) as features:
                out = self.teacher(pixel_values.to(dtype))
        return (out.logits if hasattr(out, "logits") else out).float(), features

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The gradient-accumulation window's micro-batches, each with its teacher logits; the loss's batch
        statistics are summed over the window and (for a syncing loss) all processes before any student step."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        for batch in batches:  # uint8 images -> augmented pixel_values, before the teacher sees them
            self._device_inputs(batch, train=True)
        # A new optimizer step: the loss's own gradients start from zero (Trainer zeroes the model's only).
        for p in self._loss_parameters:
            p.grad = None
        # Feature losses run the teacher with its features in compute_loss, micro-batch by micro-batch.
        if self.teacher is None or not batches or self.loss_fn.requires_features:
            return batches, num_items
        logits = [self.teacher_logits(batch["pixel_values"]) for batch in batches]
        for batch, teacher_logits in zip(batches, logits):
            batch["teacher_logits"] = teacher_logits
        if self.args.check_teacher_finite:  # a device tensor: read once the first backward is queued
            self._teacher_finite = torch.stack([torch.isfinite(t).all() for t in logits]).all()
        stats = [self.loss_fn.batch_statistics(t) for t in logits]
        self._window_statistics = None
        if stats[0] is not None:
            total = torch.stack(stats).sum(0)
            if getattr(self.loss_fn, "sync_across_processes", False) and self.accelerator.num_processes > 1:
                total = self.accelerator.reduce(total, reduction="sum")
            self._window_statistics = total
        return batches, num_items

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite, self._teacher_finite = self._teacher_finite, None
        if finite is not None and not finite:  # before the optimizer step: the student never trains on NaN
            raise ValueError(
                f"The teacher produced non-finite (NaN/inf) logits at step {self.state.global_step}; training "
                "stopped before the optimizer used them. Check the teacher checkpoint, its input normalisation "
                "and --teacher_dtype."
            )
        if self._loss_parameters and self.accelerator.sync_gradients and self.accelerator.num_processes > 1:
            self._average_loss_gradients()
        return loss

    def _average_loss_gradients(self) -> None:
        """Average the loss's own gradients over the processes (DDP averages the model's only), once per optimizer
        step: after the window's last backward, before clipping and the step."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._loss_parameters]
        flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        for p, g in zip(self._loss_parameters, flat.split([g.numel() for g in grads])):
            p.grad = g.view_as(p).to(p.dtype)

    def _clip_grad_norm(self, model):
        """Clip the student's and the loss's own gradients together (one norm over everything the step trains)."""
        if not self._loss_parameters:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_([*model.parameters(), *self._loss_parameters], self.args.max_grad_norm)

    def create_optimizer(self, model=None):
        """Trainer's optimizer, plus parameter groups for the loss's own trainable modules (ReviewKD's ABFs), with
        the student's weight-decay rule (``args.weight_decay``, none on biases and norms)."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for p in self._loss_parameters if id(p) not in present]
        if not missing:
            return optimizer
        if not created:
            raise ValueError(
                f"--distill_loss {self.args.distill_loss} trains modules of its own (trainer.loss_fn.parameters()), "
                "but the optimizer passed in optimizers=(...) does not hold them; let the trainer build the optimizer "
                "(optimizer_cls_and_kwargs=...), or add them before train(): "
                "optimizer.add_param_group({'params': list(trainer.loss_fn.parameters())})."
            )
        decay = set(self.get_decay_parameter_names(self.loss_fn))
        named = [(n, p) for n, p in self.loss_fn.named_parameters() if p.requires_grad]
        for params, weight_decay in (
            ([p for n, p in named if n in decay], self.args.weight_decay),
            ([p for n, p in named if n not in decay], 0.0),
        ):
            if params:
                optimizer.add_param_group({"params": params, "weight_decay": weight_decay})
        return optimizer

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
        inputs = self._device_inputs(inputs, train=model.training)  # a call outside the training loop's window
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if self.args.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        mode = "train" if model.training else "eval"
        if self.loss_fn.training != model.training:  # trainable loss modules (BatchNorm) follow the model's mode
            self.loss_fn.train(model.training)
        features = mode == "train" and self.teacher is not None and self.loss_fn.requires_features
        if features:  # through the wrapped model's own forward, so that DDP sees the whole graph
            with capture_features(model, **self.loss_fn.student_capture) as student_features:
                out = model(pixel_values=pixel_values)
        else:
            out = model(pixel_values=pixel_values)
        student_logits = out.logits if hasattr(out, "logits") else out
        if mode == "train" and self._log_prior is not None:  # a balanced objective; evaluation stays plain CE
            ce = logit_adjusted_cross_entropy(student_logits, labels, self._log_prior, self.args.ce_logit_adjustment)
        else:
            ce = F.cross_entropy(student_logits.float(), labels)
        terms = {"ce": ce}
        outputs = {"logits": student_logits}
        if mode == "train" and self.teacher is not None:
            if features:
                teacher_logits, teacher_features = self._teacher_forward(pixel_values, self.loss_fn.teacher_capture)
                if self.args.check_teacher_finite:  # read after the backward is queued, as for the window's logits
                    self._teacher_finite = torch.isfinite(teacher_logits).all()
                extra = {"student_features": student_features, "teacher_features": teacher_features}
            else:
                teacher_logits = inputs.get("teacher_logits")
                if teacher_logits is None:  # called outside the training loop's window
                    teacher_logits = self.teacher_logits(pixel_values)
                extra = {} if self._window_statistics is None else {"batch_statistics": self._window_statistics}
            distill = self.loss_fn(student_logits, teacher_logits, labels, **extra)
            loss = self.args.ce_weight * ce + self.distill_ramp() * distill["loss"]
            terms.update({k: v for k, v in distill.items() if k != "loss"})
            terms["distill"] = distill["loss"]
        elif mode == "train":  # distill_loss="ce": cross-entropy alone
            loss = self.args.ce_weight * ce
        else:  # student-only evaluation: its CE is the eval loss, its logits the only output
            loss = ce
            if self._report_mode and self.teacher is not None:
                outputs["teacher_logits"] = self.teacher_logits(pixel_values)
        self._accumulate(mode, terms)
        return (loss, outputs) if return_outputs else loss

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
        milestones = sorted(round(e * steps_per_epoch) for e in self.args.lr_decay_epochs)
        self.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer or self.optimizer, milestones=milestones, gamma=self.args.lr_decay_rate
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

    def _predictions(self, logits, labels):
        """What evaluation keeps per sample: the student's class, and in a report pass its and the teacher's
        softmax (for per-class accuracy and the teacher's group mass)."""
        if isinstance(logits, (tuple, list)):  # report pass: (student, teacher) logits
            return tuple(torch.softmax(t.float(), dim=-1) for t in logits)
        if self._report_mode:
            return torch.softmax(logits.float(), dim=-1)
        return logits.argmax(dim=-1)

    def _group_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        predictions = prediction.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim == 2:  # probabilities or logits
            predictions = predictions.argmax(-1)
        return group_accuracy(predictions, np.asarray(prediction.label_ids), self.groups)
