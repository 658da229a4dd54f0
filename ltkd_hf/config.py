"""`DistillationConfig`: `TrainingArguments` plus the distillation objective, each loss's settings in one place."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import inspect
import math
import os

import torch
from accelerate.utils import DistributedType
from transformers import TrainingArguments

from .groups import ClassGroups
from .losses import LOSSES, available_losses, create_loss
from .losses.registry import hyperparameters_of
from .training_fields import UNSUPPORTED_FIELDS, check_setup_values, check_training_values

__all__ = ["DistillationConfig", "TEACHER_DTYPES", "loss_settings_help", "parse_loss_kwargs"]

TEACHER_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Settings a loss class takes that the config owns elsewhere (the groups come from --num_groups).
_NOT_LOSS_KWARGS = {"num_groups": "--num_groups"}


def loss_settings_help() -> str:
    """Every registered loss's own settings and defaults, for --help and error messages."""
    parts = []
    for name in available_losses():
        settings = {k: v for k, v in hyperparameters_of(LOSSES[name]).items() if k not in _NOT_LOSS_KWARGS}
        listed = ", ".join(f"{k}={v}" for k, v in settings.items()) or "none"
        parts.append(f"{name}: {listed}")
    return "; ".join(parts)


def _convert(loss: str, key: str, text: Any, default: Any, flag: str) -> Any:
    """A ``key=value`` value as the type of the setting's default (bool, int, float); ``flag`` names where it was
    given."""
    if not isinstance(text, str):
        return text
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(
            f"{flag} {key}={text!r}: {loss}'s {key} takes a {type(default).__name__} "
            f"(default {default})."
        ) from None
    return text


def parse_loss_kwargs(
    loss: str, kwargs: dict[str, Any] | str | None, *, flag: str = "--distill_loss_kwargs"
) -> dict[str, Any]:
    """Check ``kwargs`` (a mapping, or ``"key=value,key=value"`` as on the command line) against the settings
    ``loss`` takes and return them typed; an unknown or inapplicable setting names what ``loss`` accepts. Errors
    name ``flag``: where the settings were given."""
    if kwargs is None or kwargs == "":
        return {}
    if isinstance(kwargs, str):
        pairs = {}
        for item in kwargs.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(
                    f"{flag} {kwargs!r}: write key=value pairs separated by commas, e.g. "
                    "'alpha=6,beta=6,temperature=4'."
                )
            if key.strip() in pairs:
                raise ValueError(f"{flag} {kwargs!r}: {key.strip()} given twice; give each setting once.")
            pairs[key.strip()] = value.strip()
        kwargs = pairs
    if not isinstance(kwargs, dict):
        raise ValueError(f"{flag} must be a mapping or 'key=value,...', got {kwargs!r}.")
    accepted = {k: v for k, v in hyperparameters_of(LOSSES[loss]).items() if k not in _NOT_LOSS_KWARGS}
    named = f"--distill_loss {loss}" if flag == "--distill_loss_kwargs" else loss  # the flag, where given with it
    for key in kwargs:
        if key in _NOT_LOSS_KWARGS:
            raise ValueError(f"{flag} {key}: set it with {_NOT_LOSS_KWARGS[key]} instead.")
        if key not in accepted:
            settings = ", ".join(f"{k} (default {v})" for k, v in accepted.items()) or "no settings"
            raise ValueError(
                f"{flag} {key}={kwargs[key]!r}: {named} does not take {key!r}; "
                f"it accepts {settings}."
            )
    # a setting given as None is not set (the loss's default), so the recorded settings hold the value it trains with
    return {k: _convert(loss, k, v, accepted[k], flag) for k, v in kwargs.items() if v is not None}


def check_loss_values(loss: str, kwargs: dict[str, Any], num_groups: int = 3, *, flag: str | None = None) -> None:
    """Build the loss once on stand-in classes so an out-of-range value fails now, not after earlier stages
    trained. Losses sized from the models (feature losses) are checked when the trainer builds them. Errors name
    ``flag`` (default: ``--distill_loss <loss> --distill_loss_kwargs``): where the settings were given."""
    takes = inspect.signature(LOSSES[loss].__init__).parameters
    if "student" in takes or "teacher" in takes:
        return
    counts = list(range(num_groups, 0, -1))
    try:
        create_loss(loss, groups=ClassGroups.from_counts(counts, num_groups), class_counts=counts, **kwargs)
    except ValueError as err:
        settings = ",".join(f"{k}={v}" for k, v in kwargs.items())
        flag = flag or f"--distill_loss {loss} --distill_loss_kwargs"
        raise ValueError(f"{flag} {settings}: {err}") from None


@dataclass
class DistillationConfig(TrainingArguments):
    """`TrainingArguments` plus the distillation objective.

    The student minimises ``ce_weight * CE(student, y) + ramp(epoch) * distill_loss(student, teacher)``, where
    ``ramp`` grows linearly from 0 to 1 over ``warmup_epochs``. The loss's own settings go in
    ``distill_loss_kwargs`` and are checked against the chosen loss when the config is built; the ones left
    out take that loss's defaults (LTKD: T=4, alpha=6, beta=6; DKD: T=4, alpha=1, beta=8; ...), so switching
    ``distill_loss`` never silently carries another method's weights.
    """

    distill_loss: str = field(
        default="ltkd",
        metadata={"help": f"Distillation loss: one of {', '.join(available_losses())} (ce: cross-entropy alone)."},
    )
    distill_loss_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Settings of the chosen loss as key=value pairs separated by commas (a mapping in YAML), "
            "e.g. --distill_loss_kwargs alpha=6,beta=6,temperature=4; the ones left out take the loss's "
            f"defaults. Settings and defaults per loss: {loss_settings_help()}."
        },
    )
    ce_weight: float = field(
        default=1.0, metadata={"help": "Weight of the student's cross-entropy on the labels (>= 0)."}
    )
    ce_logit_adjustment: float = field(
        default=0.0,
        metadata={
            "help": "tau of logit-adjusted cross-entropy, CE(z + tau * log(class prior), y) with the training split's "
            "class frequencies (Menon et al., ICLR 2021): 0 = plain CE (the biased teacher), 1 = balanced softmax "
            "(Ren et al., NeurIPS 2020), the 'fix the teacher' baseline. Predictions use the raw logits."
        },
    )
    num_groups: int = field(
        default=3,
        metadata={"help": "K, the number of frequency groups (3 = head/medium/tail, 33/34/33 percent of classes)."},
    )
    warmup_epochs: float = field(
        default=0.0,
        metadata={
            "help": "Epochs over which the distillation term ramps linearly from 0 to full weight (CIFAR recipes: 20)."
        },
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
    device_augmentation: bool = field(
        default=False,
        metadata={
            "help": "Turn batches of uint8 'images' (ltkd_hf.data.InMemoryImages + collate_images) into "
            "pixel_values on the device: in training the small-input recipe's random crop (4-px zero padding) and "
            "horizontal flip per sample, then the student's mean/std, before the teacher runs (teacher and student "
            "see the same batch); in evaluation the normalisation only. Batches that already carry pixel_values "
            "pass unchanged. The recipes' --in_memory_data true sets it."
        },
    )
    teacher_cache: bool = field(
        default=False,
        metadata={
            "help": "Read the teacher's logits from a cache of (training image, crop-and-flip outcome) rows instead "
            "of running the teacher each step: the same numbers (up to float rounding). The teacher runs only on rows "
            "not cached yet and stores them, so every later run of the same seed, teacher and split (any logit loss: "
            "ltkd, kd, dkd, dist, bkd) reads them all; reports read the teacher's test-split logits the same way. "
            "Needs device_augmentation with in-memory training data (the recipes: --in_memory_data true)."
        },
    )
    check_teacher_finite: bool = field(
        default=True,
        metadata={
            "help": "Stop with the step number when the teacher's logits hold NaN/inf (one host sync per step, "
            "after the backward is queued, where Trainer's logging_nan_inf_filter syncs too)."
        },
    )
    check_loss_finite: bool = field(
        default=True,
        metadata={
            "help": "Stop with the step number when the training loss is NaN/inf (the run diverged), before the "
            "optimizer uses it, naming the flags to change; the run is then not saved as finished. Read in the same "
            "host sync as check_teacher_finite."
        },
    )
    lr_decay_epochs: list[float] | None = field(
        default=None,
        metadata={
            "help": "Step schedule: multiply the learning rate by lr_decay_rate at each of these epochs "
            "(CIFAR recipes: 150 180 210; 'none' unsets it), each before the run's end. Replaces lr_scheduler_type; "
            "needs epoch-based training."
        },
    )
    lr_decay_rate: float = field(default=0.1, metadata={"help": "Factor of each lr_decay_epochs step (0 < rate < 1)."})

    # TrainingArguments defaults that image distillation needs.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep all dataset columns: image transforms produce pixel_values lazily."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "Input keys that hold the labels."}
    )

    def __post_init__(self) -> None:
        check_setup_values(self)
        super().__post_init__()
        self._refuse_unsupported()
        launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun and accelerate launch for every process
        # accelerate reports one process (the recipes on CPU), or several with no distributed type (a gloo group
        # started by ddp_backend without use_cpu): either way each process would train alone
        alone = launched > 1 and (
            self.world_size < launched or self.distributed_state.distributed_type == DistributedType.NO
        )
        if alone:
            raise ValueError(
                f"{launched} processes were launched, but accelerate set up no distributed training (world size "
                f"{self.world_size}), so each process would train its own copy of the student and write the same "
                "folders. On CPU pass --use_cpu true --ddp_backend gloo (use_cpu=True, ddp_backend='gloo'); on GPUs "
                "launch with accelerate launch --multi_gpu or torchrun."
            )
        names = available_losses()
        if self.distill_loss not in names:
            raise ValueError(f"--distill_loss {self.distill_loss!r} is not a registered loss; choose one of {names}.")
        self.distill_loss_kwargs = parse_loss_kwargs(self.distill_loss, self.distill_loss_kwargs)
        for name in ("ce_weight", "warmup_epochs", "ce_logit_adjustment"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"--{name} must be a finite number >= 0, got {value!r}.")
        if self.distill_loss == "ce" and self.ce_weight == 0:
            raise ValueError(
                "--ce_weight 0 with --distill_loss ce: the loss is ce_weight * CE alone, so it would be 0 and nothing "
                "would be learned; pass --ce_weight > 0, or choose a distillation loss."
            )
        if isinstance(self.num_groups, bool) or not isinstance(self.num_groups, int) or self.num_groups < 1:
            raise ValueError(f"--num_groups must be an integer >= 1, got {self.num_groups!r}.")
        check_loss_values(self.distill_loss, self.distill_loss_kwargs, self.num_groups)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.eval_accumulation_steps is not None and self.eval_accumulation_steps < 1:
            raise ValueError(f"--eval_accumulation_steps must be >= 1 (or unset), got {self.eval_accumulation_steps}.")
        if self.lr_decay_epochs is not None:
            if self.max_steps > 0:
                raise ValueError(
                    f"--lr_decay_epochs {self.lr_decay_epochs} needs epoch-based training, but "
                    f"--max_steps {self.max_steps}; drop --max_steps and set the epochs (--num_train_epochs; "
                    "--teacher_epochs for the recipes' teacher), or pass --lr_decay_epochs none."
                )
            if any(not e > 0 for e in self.lr_decay_epochs):
                raise ValueError(f"--lr_decay_epochs must hold positive epochs, got {self.lr_decay_epochs}.")
        if not 0 < self.lr_decay_rate < 1:
            raise ValueError(f"--lr_decay_rate must be in (0, 1) (1 keeps the learning rate unchanged at each "
                             f"--lr_decay_epochs step), got {self.lr_decay_rate}.")
        check_training_values(self)
        if self.teacher_cache:
            self._check_teacher_cache()
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"--teacher_dtype must be one of {sorted(TEACHER_DTYPES)}, got {self.teacher_dtype!r}.")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(
                f"--num_train_epochs {self.num_train_epochs} (and no --max_steps) trains nothing; pass a number of "
                "epochs > 0 or --max_steps N."
            )

    def _check_teacher_cache(self) -> None:
        """The cache holds the teacher's logits only: a loss must need no more of the teacher, and need it at all."""
        if self.distill_loss == "ce":
            raise ValueError(
                "--teacher_cache true: --distill_loss ce trains with cross-entropy alone, so no teacher runs and "
                "there is nothing to cache; drop --teacher_cache or choose a distillation loss."
            )
        if LOSSES[self.distill_loss].requires_features:
            raise ValueError(
                f"--teacher_cache true: --distill_loss {self.distill_loss} reads the teacher's intermediate features, "
                "which the cache (the teacher's logits only) does not hold; drop --teacher_cache, or use it with a "
                f"logit loss ({', '.join(n for n in available_losses() if n != 'ce' and not LOSSES[n].requires_features)})."
            )

    def _refuse_unsupported(self) -> None:
        """A `TrainingArguments` field that `DistillationTrainer` cannot honour must stay at its default."""
        defaults = {f.name: f for f in fields(self) if f.name in UNSUPPORTED_FIELDS}
        for name, reason in UNSUPPORTED_FIELDS.items():
            if name not in defaults:  # a field of a newer transformers than the one installed
                continue
            f = defaults[name]
            default = f.default_factory() if f.default is MISSING else f.default
            if name == "do_eval":  # TrainingArguments turns it on itself when eval_strategy evaluates
                default = self.eval_strategy != "no"
            value = getattr(self, name)
            if value != default and not (not value and not default):
                raise ValueError(
                    f"--{name} {value!r} is not supported by DistillationTrainer: {reason}. Leave it at its default "
                    f"({default!r})."
                )

    def __getstate__(self) -> dict[str, Any]:
        """The pickled config without the Hub token: Trainer saves the pickle as training_args.bin in every saved
        folder and checkpoint, which a push uploads (a write token on the Hub)."""
        return {**self.__dict__, "hub_token": None}

    def loss_settings(self) -> dict[str, Any]:
        """Every setting of the chosen loss: its defaults updated with ``distill_loss_kwargs``."""
        defaults = {k: v for k, v in hyperparameters_of(LOSSES[self.distill_loss]).items() if k not in _NOT_LOSS_KWARGS}
        return {**defaults, **self.distill_loss_kwargs}
