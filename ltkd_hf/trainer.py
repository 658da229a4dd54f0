"""`DistillationTrainer`: LTKD (or any registered loss) on `transformers.Trainer`.

The trainer holds the frozen teacher, the loss and the optimizer step. What it trains is a `DistillationModel` (the
student and the loss's modules), so Trainer's own machinery trains, synchronises, clips and checkpoints the loss's
trainable parts as it does the student's; what a run leaves behind (the canonical folder, the report, the card) is
written by its `RunArtefacts`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from timm.data import resolve_data_config
from transformers import EvalPrediction, Trainer
from transformers.trainer_utils import TrainOutput

from .config import TEACHER_DTYPES, DistillationConfig
from .data.in_memory import BatchAugmentation, InMemoryImages
from .data.split_info import SplitInfo
from .data.transforms import normalization_converter
from .distillation_model import DistillationModel
from .evaluation.metrics import group_accuracy
from .evaluation.report import saved_report
from .hub.card import results_from_report
from .hub.push import hub_api
from .hub.save import WEIGHTS_NAME
from .loss_terms import LossTerms
from .losses import capture_features, create_loss, log_class_prior
from .models.loading import unwrap_timm
from .run_artefacts import LOSS_STATE_NAME, RunArtefacts, check_resumable, is_last_step
from .teacher_cache import TeacherLogitCache, cache_key, check_cache_folder, tensor_fingerprint
from .trainer_inputs import (
    DeviceBatches, check_best_metric, check_labelled, check_run_length, checked_split_info, describe_teacher,
)

logger = logging.getLogger(__name__)

__all__ = ["DistillationConfig", "DistillationTrainer", "LOSS_STATE_NAME"]


def _as_tuple(predictions: Any) -> tuple:
    return predictions if isinstance(predictions, tuple) else (predictions,)


class DistillationTrainer(Trainer):
    """`transformers.Trainer` that distills a student from a frozen teacher and owns the run's artefacts.

    Trainer's model is a `DistillationModel` (the student is ``trainer.model.student``): the loss's trainable
    modules (ReviewKD's fusion modules, initialised from ``args.seed`` in every process) are trained, synchronised
    across processes (DDP, FSDP, DeepSpeed), clipped and checkpointed with the student, in its optimizer groups
    and weight-decay rule. The model folder (``save_model()``, each checkpoint's weights) and its Hub upload hold
    the student alone; each checkpoint-N folder also holds the loss's state, restored on resume (`RunArtefacts`).

    The teacher never enters the optimizer or a checkpoint: it is frozen, pinned in eval mode (BatchNorm
    statistics never move), prepared by accelerate for inference only and run under ``no_grad``. The loss is a
    per-batch mean, so Trainer divides it by the gradient-accumulation steps (``loss_is_scaled_for_ga =
    False``). Losses with batch statistics (LTKD's group sums) see the whole optimizer step: the teacher's
    logits for a gradient-accumulation window are computed first and the statistics summed over the window and
    all processes. Feature losses (``requires_features``) read both models' stage features, recorded during the
    student's forward and a teacher forward per micro-batch. The student's cross-entropy honours
    ``label_smoothing_factor`` in training; evaluation is a student-only pass: plain cross-entropy, overall and
    per-group accuracy. With ``args.device_augmentation``, batches of uint8 ``images`` become ``pixel_values`` on
    the device (`DeviceBatches`), a training window's before the teacher sees them: both see the same batch.

    With ``args.teacher_cache`` (logit losses, in-memory training data), the training windows' teacher logits are
    read from a `TeacherLogitCache` in ``teacher_cache_dir`` (the teacher's logits for the training images under
    the crop-and-flip outcomes runs have drawn, looked up by each sample's row and the outcome drawn for it); the
    teacher runs only on the rows not yet filled, and stores them. ``train()`` opens the cache made for this
    teacher, split, augmentation and input conversion, or creates it empty (the main process creates it, the
    others wait and open it, memory-mapped: one copy per machine). The numbers are the online teacher's up to
    float rounding, so the run is the same run. ``evaluate()`` never runs the teacher; the report reads the
    teacher's logits on an in-memory held-out split from a cache of that split (filled by the first report).

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
            from the two models' ``pretrained_cfg`` (mean/std, and size when they differ). A teacher-logit cache is
            keyed by its ``repr`` (a function's holds its address: every run creates its cache anew).
        teacher_cache_dir: with ``args.teacher_cache``, the cache's folder (default
            ``<output_dir>/_teacher-logit-cache``: the leading underscore keeps it out of Trainer's Hub uploads);
            runs of the same teacher on the same split share it when they are given the same folder.
        validation_dataset: held-out data (never the test split) that `write_report` scores beside the
            ``eval_dataset``, to choose settings on; in the form of ``eval_dataset``.
        data_caveats: what the reports and the card must say about the data that the trainer cannot see in it,
            one sentence each; e.g. that held-out images are copies of training images, found from
            `ltkd_hf.data.verify_images`' digests with `ltkd_hf.data.shared_images` (the recipes do so).
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
        split_info: SplitInfo | None = None,
        class_counts: Sequence[int] | None = None,
        teacher_name: str | None = None,
        teacher_input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        teacher_cache_dir: str | os.PathLike | None = None,
        validation_dataset: Any = None,
        data_caveats: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.validation_dataset = validation_dataset
        train_dataset = kwargs.get("train_dataset")
        check_labelled(train_dataset=train_dataset, eval_dataset=kwargs.get("eval_dataset"),
                       validation_dataset=validation_dataset)
        self.split_info = checked_split_info(args, model, teacher_model, split_info, class_counts, train_dataset)
        if hasattr(train_dataset, "__len__"):
            check_run_length(args, len(train_dataset))
        self.groups = self.split_info.groups(args.num_groups)
        if "compute_metrics" not in kwargs:  # the caller's metrics are theirs to name
            check_best_metric(args, self.groups.names)
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
        self.teacher_name = None if teacher_model is None else teacher_name or describe_teacher(teacher_model)
        distillation_model = DistillationModel(model, self.loss_fn)
        self.artefacts = RunArtefacts(distillation_model, args, self.split_info, self.groups, self.teacher_name,
                                      caveats=data_caveats)
        if args.ddp_find_unused_parameters is None:
            # transformers' choice for a PreTrainedModel (the student); for any other model it would search the
            # graph for unused parameters at every step, and every parameter takes part in each training forward.
            args.ddp_find_unused_parameters = False
        kwargs.setdefault("compute_metrics", self._group_metrics)
        kwargs.setdefault("preprocess_logits_for_metrics", self._predictions)
        super().__init__(model=distillation_model, args=args, **kwargs)
        if self.args.device.type == "cpu":  # nothing to pin into (torch warns at every loader); transformers' default
            self.args.dataloader_pin_memory = False
        if args.fp16 and not self.accelerator.native_amp:
            raise ValueError(
                f"--fp16 true: accelerate has no float16 autocast on {self.args.device.type}, so every step would run "
                "in float32 while the folders record fp16; use --bf16 true there, or drop it."
            )
        # Older transformers decide the GA scaling from this flag alone; our loss takes no loss kwargs.
        self.model_accepts_loss_kwargs = False
        student_cfg = resolve_data_config(model=unwrap_timm(model))
        augmentation = BatchAugmentation.from_data_config(student_cfg) if args.device_augmentation else None
        self.device_batches = DeviceBatches(augmentation, self.args.device)
        self.device_batches.check(train_dataset, kwargs.get("eval_dataset"))
        self.teacher_cache_dir = None
        if args.teacher_cache:
            self.device_batches.check_cacheable(train_dataset)
            self.teacher_cache_dir = Path(teacher_cache_dir or Path(args.output_dir) / "_teacher-logit-cache")
            check_cache_folder(self.teacher_cache_dir, args.world_size)
        elif teacher_cache_dir is not None:
            raise ValueError(
                f"teacher_cache_dir={str(teacher_cache_dir)!r} is given but teacher_cache is off, so no cache is "
                "read or written; pass teacher_cache=True (--teacher_cache true) with it, or drop it."
            )
        self.teacher_cache: TeacherLogitCache | None = None  # opened by train()

        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if teacher_model is not None and teacher_input_transform is None:
            teacher_input_transform = normalization_converter(
                student_cfg, resolve_data_config(model=unwrap_timm(teacher_model))
            )
        self.teacher = None if teacher_model is None else self._prepare_teacher(teacher_model)
        self.teacher_input_transform = teacher_input_transform
        self._logit_adjustment = None
        if args.ce_logit_adjustment:
            prior = log_class_prior(self.split_info.class_counts).to(self.args.device)
            self._logit_adjustment = args.ce_logit_adjustment * prior
        self.report: dict[str, dict] | None = None
        self._report_mode = False
        self._evaluation_cache: TeacherLogitCache | None = None  # the held-out split's, during a report pass
        self._window_statistics: torch.Tensor | None = None
        self._teacher_finite: torch.Tensor | None = None
        self.loss_terms = LossTerms()
        logger.info(
            "Objective: %s * CE%s + ramp(%s warmup epochs) * [%s]; groups %s sizes %s",
            args.ce_weight,
            f" (logit-adjusted, tau={args.ce_logit_adjustment})" if args.ce_logit_adjustment else "",
            args.warmup_epochs,
            self.loss_fn.describe(),
            list(self.groups.names),
            self.groups.sizes,
        )

    # -- teacher -------------------------------------------------------------------------------
    def _prepare_teacher(self, teacher: torch.nn.Module) -> torch.nn.Module:
        teacher.requires_grad_(False)
        teacher.eval()
        if self.args.teacher_dtype != "auto":
            teacher.to(TEACHER_DTYPES[self.args.teacher_dtype])
        elif self.args.device.type == "cuda" and self.accelerator.mixed_precision in ("bf16", "fp16"):
            # The accelerator's precision, set by --bf16/--fp16 or by `accelerate launch --mixed_precision`.
            teacher.to(torch.bfloat16 if self.accelerator.mixed_precision == "bf16" else torch.float16)
        if self.args.channels_last:
            teacher.to(memory_format=torch.channels_last)
        # With torch_compile on, accelerate compiles it here too, with the student's backend and mode.
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    @property
    def _distils(self) -> bool:
        """Whether training runs the teacher: with distill_loss "ce" a teacher given serves the reports only."""
        return self.teacher is not None and self.args.distill_loss != "ce"

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

    def open_teacher_cache(self, dataset: InMemoryImages | None = None) -> TeacherLogitCache:
        """The teacher-logit cache in ``teacher_cache_dir`` made for this teacher, training split, augmentation and
        input conversion; with ``dataset``, a held-out split's (not augmented) in a subfolder of it named by the
        split's fingerprint. The main process opens it or creates it (empty), then the others open it (one that finds
        it replaced by a run of another key meanwhile creates its own)."""
        teacher = self.accelerator.unwrap_model(self.teacher, keep_torch_compile=False)
        conversion, precision = repr(self.teacher_input_transform), self.accelerator.mixed_precision
        if dataset is None:
            key = cache_key(teacher, self.train_dataset, self.device_batches.augmentation, conversion,
                            precision=precision)
            folder = self.teacher_cache_dir
        else:
            key = cache_key(teacher, dataset, self.device_batches.augmentation, conversion, precision=precision,
                            evaluation=True)
            folder = self.teacher_cache_dir / f"evaluation-{key['images'][:16]}"
        with self.args.main_process_first(desc="the teacher-logit cache"):
            cache = TeacherLogitCache.open(folder, key)
            if cache is not None:
                logger.info("Reusing the teacher-logit cache in %s (same teacher, split and augmentation): %.1f%% of "
                            "its rows filled.", folder, 100 * cache.filled_fraction())
            else:  # the main process, first; another only when a run of another key replaced it meanwhile
                logger.info("Creating the teacher-logit cache in %s: %d images x %d outcomes, filled as %s draws "
                            "them.", folder, key["num_images"], key["outcomes"],
                            "training" if dataset is None else "evaluation")
                cache = TeacherLogitCache.create(folder, key, self.split_info.num_classes)
        return cache

    # -- the optimizer step --------------------------------------------------------------------
    def get_train_dataloader(self):
        """Trainer's loader, then each process's generators seeded apart (accelerate's ``set_seed(seed,
        device_specific=True)``: the seed plus the process index). Trainer seeds every process alike and only its
        loader workers apart, so the device augmentation, or a transform run in the main process
        (``dataloader_num_workers=0``), drew the same crops and flips on every process: each process's j-th image
        augmented as the others' j-th. The sampler has taken the common seed by now: the processes still split one
        shuffled order."""
        dataloader = super().get_train_dataloader()
        if self.args.world_size > 1:
            set_seed(self.args.seed, device_specific=True)
        return dataloader

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The gradient-accumulation window's micro-batches, each with its teacher logits; the loss's batch
        statistics are summed over the window and (for a syncing loss) all processes before any student step."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        for batch in batches:  # uint8 images -> augmented pixel_values, before the teacher sees them
            self.device_batches(batch, train=True)
            missing = [key for key in ("pixel_values", "labels") if key not in batch]
            if missing:  # else a KeyError deep in the step
                raise ValueError(
                    f"A training batch holds {sorted(batch)} but no {missing}: DistillationTrainer reads "
                    "'pixel_values' (or uint8 'images') and 'labels'; rename the dataset's keys, or pass a "
                    "data_collator that does."
                )
        # Feature losses run the teacher with its features in compute_loss, micro-batch by micro-batch.
        if not self._distils or not batches or self.loss_fn.requires_features:
            return batches, num_items
        if self.teacher_cache is not None:
            logits = [self._cached_teacher_logits(batch) for batch in batches]
        else:
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

    def _cached_teacher_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The cached teacher logits of a training micro-batch: its rows under the outcomes its augmentation drew."""
        if "index" not in batch or "augmentation_outcome" not in batch:
            raise ValueError(
                "teacher_cache=True: a training batch carries no 'index' (each image's row in the training split) "
                "or no augmentation outcome; batch InMemoryImages with ltkd_hf.data.collate_images, which keeps the "
                "rows, and let the trainer augment them (device_augmentation=True)."
            )
        return self.teacher_cache.lookup(batch["index"], batch["augmentation_outcome"], batch["pixel_values"],
                                         self.teacher_logits)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        checks = {} if self._teacher_finite is None else {"teacher": self._teacher_finite}
        self._teacher_finite = None
        if self.args.check_loss_finite:
            checks["loss"] = torch.isfinite(loss)
        if not checks:
            return loss
        # One host sync, before the optimizer step: the model never trains on NaN. Every process stops together.
        failed = (~torch.stack(list(checks.values()))).int()
        if self.accelerator.num_processes > 1:
            failed = self.accelerator.reduce(failed, reduction="sum")
        failed = dict(zip(checks, failed.tolist()))
        step = self.state.global_step
        if failed.get("teacher"):
            raise ValueError(
                f"The teacher produced non-finite (NaN/inf) logits at step {step}; training stopped before the "
                "optimizer used them. Check the teacher checkpoint, its input normalisation and --teacher_dtype."
            )
        if failed.get("loss"):
            raise ValueError(
                f"The training loss is non-finite (NaN/inf) at step {step}; training stopped before the optimizer "
                f"used it, and the run is not saved as finished. {self._divergence_fix()}"
            )
        return loss

    def _divergence_fix(self) -> str:
        clip = self.args.max_grad_norm
        return (
            f"The run diverged: lower --learning_rate (now {self.args.learning_rate:g}), or clip the gradients with "
            f"--max_grad_norm (now {clip:g}{', off' if not clip else ''}; the demo config clips at 5)."
        )

    def create_optimizer(self, model=None):
        """Trainer's optimizer; one passed in ``optimizers=(...)`` must hold every trainable parameter of the model
        (the loss's own modules too)."""
        optimizer = super().create_optimizer(model)
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if any(id(p) not in present for p in self.loss_fn.parameters() if p.requires_grad):
            raise ValueError(
                f"--distill_loss {self.args.distill_loss} trains modules of its own (trainer.loss_fn.parameters()), "
                "but the optimizer passed in optimizers=(...) does not hold them; let the trainer build the optimizer "
                "(optimizer_cls_and_kwargs=...), or add them before train(): "
                "optimizer.add_param_group({'params': list(trainer.loss_fn.parameters())})."
            )
        return optimizer

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

    # -- loss ----------------------------------------------------------------------------------
    def distill_ramp(self) -> float:
        """Weight of the distillation term now: ``min(epochs done / warmup_epochs, 1)``, the epochs done counted per
        optimizer step (``state.epoch``): 0 at the first step, full from the end of epoch ``warmup_epochs``."""
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
        inputs = self.device_batches(inputs, train=model.training)  # a call outside the training loop's window
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if self.args.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        train = model.training
        teacher: dict[str, Any] = {}
        if train and self._distils:
            if self.loss_fn.requires_features:
                logits, features = self._teacher_forward(pixel_values, self.loss_fn.teacher_capture)
                if self.args.check_teacher_finite:  # read after the backward is queued, as for the window's logits
                    self._teacher_finite = torch.isfinite(logits).all()
                teacher = {"teacher_logits": logits, "teacher_features": features}
            else:
                logits = inputs.get("teacher_logits")
                # outside the training loop's window the batch is its own: the last window's statistics are not its
                statistics = self._window_statistics if logits is not None else None
                if logits is None:
                    logits = self.teacher_logits(pixel_values)
                teacher = {"teacher_logits": logits, "batch_statistics": statistics}
        # The student (and the loss, given the teacher) through the wrapped model's forward: the engine sees it all.
        student_logits, distill = model(pixel_values=pixel_values, labels=labels, **teacher)
        ce = self._cross_entropy(student_logits, labels, train)
        terms, outputs = {"ce": ce}, {"logits": student_logits}
        if distill is not None:
            loss = self.args.ce_weight * ce + self.distill_ramp() * distill["loss"]
            terms.update({k: v for k, v in distill.items() if k != "loss"})
            terms["distill"] = distill["loss"]
        elif train:  # distill_loss="ce": cross-entropy alone
            loss = self.args.ce_weight * ce
        else:  # student-only evaluation: its CE is the eval loss, its logits the only output
            loss = ce
            if self._report_mode and self.teacher is not None:
                outputs["teacher_logits"] = self._report_teacher_logits(inputs, pixel_values)
        # training terms are means over steps (as Trainer's loss), evaluation terms over images (as its eval_loss)
        self.loss_terms.add("train" if train else "eval", terms, weight=1 if train else len(labels))
        return (loss, outputs) if return_outputs else loss

    def _report_teacher_logits(self, inputs: dict[str, Any], pixel_values: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of a report batch: from the held-out split's cache when there is one (a report of
        a run with the teacher cache, on in-memory data), else the teacher's forward."""
        if self._evaluation_cache is None or "index" not in inputs:
            return self.teacher_logits(pixel_values)
        index = inputs["index"]
        return self._evaluation_cache.lookup(index, torch.zeros_like(index), pixel_values, self.teacher_logits)

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor, train: bool) -> torch.Tensor:
        """The student's CE: in training of the logit-adjusted logits (``ce_logit_adjustment``: ``z + tau log pi``)
        and label-smoothed (``label_smoothing_factor``); in evaluation plain."""
        logits = logits.float()
        if not train:
            return F.cross_entropy(logits, labels)
        if self._logit_adjustment is not None:  # a balanced objective (see logit_adjusted_cross_entropy)
            logits = logits + self._logit_adjustment
        return F.cross_entropy(logits, labels, label_smoothing=self.args.label_smoothing_factor)

    # -- logging and metrics -------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss component, averaged over the logging window (and across processes)."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train" if "loss" in logs else None
        if mode is not None:
            prefix = "eval_" if mode == "eval" else ""
            for name, mean in self.loss_terms.pop_means(mode).items():
                logs[prefix + name] = self.accelerator.reduce(mean, reduction="mean").item()
        super().log(logs, start_time)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Trainer's evaluation, leaving torch's random state as it found it: each data loader draws its base seed
        from torch's generator when it starts, so an evaluation during training moved every later augmentation draw
        and ``eval_strategy`` changed the trained weights."""
        with torch.random.fork_rng(devices=[]):
            return super().evaluate(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Trainer's evaluation step; a batch of uint8 ``images`` is normalised on the device first."""
        inputs = self.device_batches(inputs, train=False)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

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

    # -- what the run leaves behind (RunArtefacts) ---------------------------------------------
    def run_settings(self) -> dict[str, Any]:
        """The settings that define this run, as recorded in every folder it saves (see `ltkd_hf.provenance`)."""
        return self.artefacts.settings()

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The canonical student folder (and in a checkpoint the loss's state) from the model's state: the one
        Trainer gathered (FSDP, DeepSpeed), or the model's own."""
        if self.args.should_save:
            state = state_dict if state_dict is not None else self.model.state_dict()
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            broken = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
            if broken:
                raise ValueError(
                    f"{len(broken)} of the model's tensors hold NaN/inf ({', '.join(broken[:3])}"
                    f"{', ...' if len(broken) > 3 else ''}), so nothing was saved to {output_dir}. "
                    f"{self._divergence_fix()}"
                )
            self.artefacts.save(output_dir, state)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """The model's state from a checkpoint folder; transformers passes the model FSDP wraps once it does, which
        loads from the engine's own files in the folder."""
        if model is not None and self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        (model if model is not None else self.model).load_state_dict(self.artefacts.load(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:  # their own files in the checkpoint hold the model
            return super()._load_best_model()
        logger.info("Loading best model from %s (score: %s).", self.state.best_model_checkpoint, self.state.best_metric)
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`; a checkpoint is resumed only when the settings it records equal this run's. With
        ``args.teacher_cache`` the teacher-logit cache is opened (or created) first."""
        checkpoint = self.artefacts.checkpoint_to_resume(resume_from_checkpoint)
        if checkpoint is not None:
            state = check_resumable(checkpoint)
            if is_last_step(state):
                # A checkpoint of the finished run: transformers would resume it for one more step when max_steps
                # ends mid-epoch, so load it and train no further.
                logger.info("%s is the run's last step: loaded, not trained further.", checkpoint)
                self._load_from_checkpoint(checkpoint)
                self.state = state
                return TrainOutput(state.global_step, float("nan"), {})
        if self.args.teacher_cache:
            self.teacher_cache = self.open_teacher_cache()
        self.report = None  # a report of the weights before this training: the card must not take it for theirs
        output = super().train(checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval)
        if self.teacher_cache is not None and self.teacher_cache.lookups:
            cache = self.teacher_cache
            logger.info("Teacher-logit cache: %d of this process's %d teacher rows read from it (%.1f%%), the teacher "
                        "ran for the rest; %.1f%% of its rows now filled.", cache.hits, cache.lookups,
                        100 * cache.hits / cache.lookups, 100 * cache.filled_fraction())
        return output

    @property
    def model_label(self) -> str:
        """The student's row name in reports: "student (LTKD)", "student (CE)", ..."""
        return f"student ({self.args.distill_loss.upper()})"

    def write_report(
        self,
        output_dir: str | None = None,
        *,
        eval_dataset: Any = None,
        name: str | None = None,
        other_reports: Mapping[str, Mapping[str, Any]] | None = None,
        validation_dataset: Any = None,
        metadata: Mapping[str, Any] | None = None,
        reuse: bool = False,
    ) -> dict[str, dict]:
        """Score the model (and the teacher) on ``eval_dataset`` (default: the trainer's, the test split) from one
        ``predict()`` pass, write report.json, report.md and the plots into ``output_dir`` (default
        ``args.output_dir``), and return ``{row name: evaluation_report}``.

        With ``reuse=True`` the report.json already in ``output_dir`` is returned instead, without scoring, when it
        scored these very weights: the same student and teacher (fingerprints of their ``state_dict``), rows,
        ``other_reports``, statement of the run and number of images. The recipes reuse a finished stage's report
        so; the images themselves are the caller's to keep (the recipes' folders record the data they trained on).

        ``name`` is the model's row (default `model_label`, e.g. "student (CE)"; the recipes pass "teacher" for
        the run that trains the teacher); ``other_reports`` adds rows (e.g. the CE student's), under names other
        than the rows scored here (``name`` and "teacher"). With
        ``validation_dataset`` (default: the trainer's) each scored row also carries its accuracy on it under
        ``"validation"``. ``metadata``
        replaces what the report states about the run (`ltkd-eval` states what a saved folder records); the
        trainer's ``data_caveats`` are stated either way.
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        validation_dataset = validation_dataset if validation_dataset is not None else self.validation_dataset
        output_dir = output_dir or self.args.output_dir
        name = name or self.model_label
        facts = metadata if metadata is not None else self.artefacts.report_metadata(validation_dataset is not None)
        if self.artefacts.caveats:  # whoever states the run, the data's caveats are stated with its numbers
            facts = {**facts, "caveats": self.artefacts.caveats}
        # the weights' fingerprints: only where a report is written or reused (not on every process of a run)
        scored = self._scored(name, dataset, validation_dataset) if reuse or self.args.should_save else None
        if reuse:
            saved = saved_report(output_dir, scored, facts, other_reports)
            if saved is not None:
                logger.info("Reusing %s: it scored these same weights", Path(output_dir) / "report.json")
                self.report, self.artefacts.row = saved, name
                return saved
        validation = None
        self._report_mode = True
        try:
            out = self._report_predict(dataset, "test")
            if validation_dataset is not None:
                held = self._report_predict(validation_dataset, "validation")
                validation = (_as_tuple(held.predictions), np.asarray(held.label_ids))
        finally:
            self._report_mode = False
        self.report = self.artefacts.report(
            _as_tuple(out.predictions),
            np.asarray(out.label_ids),
            name=name,
            other_reports=other_reports,
            output_dir=output_dir,
            validation=validation,
            metadata=facts,
            scored=scored,
        )
        return self.report

    def _scored(self, name: str, dataset: Any, validation_dataset: Any) -> dict[str, Any]:
        """What a report scores, as its report.json records it (``"scored"``)."""
        return {
            "row": name,
            "model": tensor_fingerprint(unwrap_timm(self.model.student).state_dict()),
            # the teacher whose row the report holds (RunArtefacts.report scores it when it has a teacher_name)
            "teacher": None if self.artefacts.teacher_name is None
            else tensor_fingerprint(unwrap_timm(self.teacher).state_dict()),
            "test_images": len(dataset),
            "validation_images": None if validation_dataset is None else len(validation_dataset),
        }

    def _report_predict(self, dataset: Any, prefix: str):
        """``predict`` in a report pass; with the teacher cache and an in-memory split, the teacher's rows of the
        split are read from (and filled into) that split's cache: every report of the teacher after the first reads
        them."""
        cached = self.args.teacher_cache and self.teacher is not None and isinstance(dataset, InMemoryImages)
        self._evaluation_cache = self.open_teacher_cache(dataset) if cached else None
        try:
            return self.predict(dataset, metric_key_prefix=prefix)
        finally:
            self._evaluation_cache = None

    def _card_results(self) -> dict[str, float]:
        """The card's accuracies: the report's, when `write_report` scored these weights (the card shows its table:
        the same pass, not a second one), else the latest evaluation's, running ``evaluate()`` when there is none."""
        if self.report is not None:
            return results_from_report(self.report[self.artefacts.row])
        metrics = next((e for e in reversed(self.state.log_history) if "eval_accuracy" in e), None)
        metrics = metrics if metrics is not None else self.evaluate()
        metrics = {k.removeprefix("eval_"): v for k, v in metrics.items()}
        return {k: float(v) for k, v in metrics.items() if k.startswith("accuracy")}

    def _check_trained_or_saved(self, call: str) -> None:
        """Refuse a card (and a push, which writes one) of a student that has neither trained nor been saved: it
        would describe a run that did not happen, with the untrained weights' accuracies."""
        if self.state.global_step == 0 and not (Path(self.args.output_dir) / WEIGHTS_NAME).is_file():
            raise ValueError(
                f"{call}: the student has not trained (no step) and {self.args.output_dir} holds no saved model, so "
                "the card would describe a run that did not happen; call train() and save_model() first (or "
                "save_model() for weights trained elsewhere)."
            )

    def create_model_card(self, model_name: str | None = None, license: str = "apache-2.0", **kwargs: Any) -> None:
        """Write the group model card into ``args.output_dir/README.md``: ``model-index`` with overall / head /
        medium / tail accuracy (`write_report`'s, else the latest ``evaluate()``'s), where each model started, the
        long-tailed split as it was made, the loss and its settings, the seeds, the report's table and plots when
        `write_report` ran."""
        self._check_trained_or_saved("create_model_card()")
        results = self._card_results()
        if self.is_world_process_zero():
            name = getattr(self, "hub_model_id", None) or self.args.hub_model_id or model_name
            self.artefacts.write_card(name or Path(self.args.output_dir).name, results, self.report, license)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        **kwargs,
    ):
        """Push ``args.output_dir`` (the canonical folder and its group card; checkpoints stay home) to ``revision``
        (default ``args.hub_revision``, else main), a branch created when the repo has none of that name (Trainer
        uploads to it but never creates it: the upload failed, after the training)."""
        self._check_trained_or_saved("push_to_hub()")  # before Trainer's save_model() makes the folder look saved
        self._card_results()  # every process: evaluate() is collective when the card needs it
        token, revision = token or self.args.hub_token, revision or self.args.hub_revision
        if revision is not None and self.is_world_process_zero():
            if self.hub_model_id is None:
                self.init_hf_repo(token=token)
            hub_api(token).create_branch(self.hub_model_id, branch=revision, exist_ok=True)
        return super().push_to_hub(commit_message=commit_message, blocking=blocking, token=token, revision=revision,
                                   **kwargs)
