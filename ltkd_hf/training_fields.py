"""What each `DistillationConfig` field does to a run: changes the trained weights, changes none, or is not honoured.

Every field is in exactly one of the three tables below (a test enumerates `DistillationConfig`'s fields against
them, so a field a new `transformers` adds fails the suite until it is classified):

* `WEIGHT_FIELDS`: the trained weights depend on it; it is recorded in every saved folder (see
  `ltkd_hf.provenance`) and a finished run is reused only when it is equal;
* `OUTPUT_FIELDS`: where and how the run logs, evaluates, saves, pushes and runs; the weights do not depend on it;
* `UNSUPPORTED_FIELDS`: `DistillationTrainer` cannot honour it (its ``compute_loss`` replaces Trainer's, or the
  models are image classifiers, not language models); `DistillationConfig` refuses a value other than the default.

`check_training_values` refuses, when the config is built, the values of supported fields that would fail only
once training has started or change nothing (an ``optim_args`` key the optimizer does not read, a scheduler the
step schedule replaces, an evaluation or save interval its strategy never reads, a logger or optimizer whose
package is not installed); `check_setup_values` those that
`TrainingArguments`' own checks would fail on with a traceback naming no flag.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from dataclasses import asdict, fields

from accelerate.utils import DynamoBackend
from torch._inductor import list_mode_options
from transformers import Trainer, TrainingArguments
from transformers.integrations import (
    get_available_reporting_integrations,
    get_reporting_integration_callbacks,
    is_deepspeed_available,
)
from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
from transformers.trainer_pt_utils import AcceleratorConfig
from transformers.trainer_utils import SchedulerType

__all__ = [
    "OBJECTIVE_FIELDS", "OUTPUT_FIELDS", "UNSUPPORTED_FIELDS", "WEIGHT_FIELDS", "check_setup_values",
    "check_training_values",
]

# The student's objective: recorded under "objective" (the rest of WEIGHT_FIELDS under "schedule").
OBJECTIVE_FIELDS = (
    "distill_loss", "distill_loss_kwargs", "ce_weight", "ce_logit_adjustment", "label_smoothing_factor",
    "num_groups", "warmup_epochs", "teacher_dtype",
)

WEIGHT_FIELDS = OBJECTIVE_FIELDS + (
    # schedule and optimizer
    "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps",
    "lr_decay_epochs", "lr_decay_rate", "optim", "optim_args", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "per_device_train_batch_size", "gradient_accumulation_steps",
    # what the batches are: their order, their augmentation draws (workers draw their own, persistent ones across
    # epochs; measured: another model after 2 epochs), and the seeds
    "seed", "data_seed", "full_determinism", "train_sampling_strategy", "dataloader_drop_last",
    "dataloader_num_workers", "dataloader_persistent_workers", "device_augmentation",
    # the arithmetic
    "bf16", "fp16", "tf32", "channels_last", "torch_compile", "torch_compile_backend", "torch_compile_mode",
    # which weights are kept at the end
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
)

OUTPUT_FIELDS = (
    "output_dir", "resume_from_checkpoint", "check_teacher_finite", "check_loss_finite",
    # the teacher's logits read from a cache of its own outputs instead of computed: the same numbers
    "teacher_cache",
    # evaluation
    "eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "eval_accumulation_steps", "bf16_full_eval",
    "fp16_full_eval", "per_device_eval_batch_size",
    # logging
    "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node", "logging_nan_inf_filter",
    "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id",
    "trackio_bucket_id", "trackio_static_space_id", "skip_memory_metrics", "debug",
    # saving and the Hub
    "save_strategy", "save_steps", "save_total_limit", "save_only_model", "save_on_each_node", "enable_jit_checkpoint",
    "restore_callback_states_from_checkpoint", "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id",
    "hub_strategy", "hub_always_push", "hub_revision",
    # where and how it runs
    "use_cpu", "local_rank", "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers",
    "ddp_static_graph", "ddp_backend", "ddp_timeout", "fsdp", "fsdp_config", "deepspeed", "accelerator_config",
    "torch_empty_cache_steps", "dataloader_pin_memory", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context",
)

# field -> why it is refused (the message names the field and its value before this).
UNSUPPORTED_FIELDS = {
    "do_train": "Trainer itself never reads it; the recipes decide what trains",
    "do_eval": "Trainer itself never reads it; set eval_strategy to evaluate during training",
    "do_predict": "Trainer itself never reads it; the report scores the test split after training",
    "prediction_loss_only": "evaluation needs the predictions for overall and per-group accuracy",
    "batch_eval_metrics": "the per-group accuracy is computed over the whole evaluation set, not per batch",
    "include_for_metrics": "the per-group metrics take predictions and labels only",
    "eval_do_concat_batches": "the per-group metrics need the predictions of all batches concatenated",
    "eval_use_gather_object": "predictions are tensors, gathered as tensors",
    "remove_unused_columns": "the image transforms read the 'image' column that this would drop (keep False)",
    "label_names": "the image datasets yield 'labels' (keep ['labels'])",
    "average_tokens_across_devices": "the loss is a per-sample mean; there are no tokens to count",
    "include_num_input_tokens_seen": "image batches have no input tokens",
    "length_column_name": "only for text batches grouped by length",
    "neftune_noise_alpha": "NEFTune adds noise to a language model's token embeddings",
    "use_liger_kernel": "Liger kernels are for language models",
    "liger_kernel_config": "Liger kernels are for language models",
    "use_cache": "a generation cache of language models",
    "optim_target_modules": "GaLore/APOLLO target the linear layers of language models",
    "gradient_checkpointing": "transformers' TimmWrapper models do not support activation checkpointing",
    "gradient_checkpointing_kwargs": "transformers' TimmWrapper models do not support activation checkpointing",
    "activation_checkpointing": "transformers' TimmWrapper models do not support activation checkpointing",
    "activation_checkpointing_kwargs": "transformers' TimmWrapper models do not support activation checkpointing",
    "auto_find_batch_size": "it would change the batch size, and with it LTKD's batch statistics, behind the run's "
    "back; set per_device_train_batch_size and gradient_accumulation_steps",
    "ignore_data_skip": "a resumed run would see other batches than the uninterrupted one; resuming is exact",
    "dataloader_in_order": "the data loader's workers would hand over each batch as soon as it is loaded, so the "
    "order of the batches, and with it the trained weights, would change from run to run under the same recorded "
    "settings; runs reproduce",
    "parallelism_config": "tensor/context parallelism is for language models",
}

# AcceleratorConfig's settings of how the batches are drawn and shared between processes.
_BATCHING_KEYS = ("split_batches", "dispatch_batches", "even_batches", "use_seedable_sampler")
# The settings only the Trackio logger reads.
_TRACKIO_FIELDS = ("project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id")
# Adam's own fields, which other optimizers never read.
_ADAM_FIELDS = ("adam_beta1", "adam_beta2", "adam_epsilon")


def check_training_values(args: TrainingArguments) -> None:
    """`TrainingArguments` values (of a `DistillationConfig`) that torch or transformers would refuse only once
    training has started, or take without effect: refused when the config is built, naming the flag."""
    for name in ("learning_rate", "weight_decay"):
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}.")
    for name in ("adam_beta1", "adam_beta2", "label_smoothing_factor"):
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {getattr(args, name)}.")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2**32 - 1] (numpy's seeds), got {args.seed}.")
    try:
        get_reporting_integration_callbacks(args.report_to)
    except ValueError as err:
        raise ValueError(f"--report_to {' '.join(args.report_to)}: {err}") from None
    missing = sorted(set(args.report_to) - {"none"} - set(get_available_reporting_integrations()))
    if missing:
        raise ValueError(
            f"--report_to {missing[0]}: its package is not installed here, and Trainer would fail once the data is "
            "read; install it, or pass --report_to none."
        )
    _check_logger_settings(args)
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be >= 0 (0 loads in the main process), got "
                         f"{args.dataloader_num_workers}.")
    if args.dataloader_persistent_workers and args.dataloader_num_workers == 0:
        raise ValueError("--dataloader_persistent_workers true keeps the data loader's worker processes between "
                         "epochs, and --dataloader_num_workers is 0 (torch refuses it once the data is read); pass "
                         "--dataloader_num_workers N, or drop it.")
    if args.dataloader_multiprocessing_context is not None and args.dataloader_num_workers == 0:
        raise ValueError(f"--dataloader_multiprocessing_context {args.dataloader_multiprocessing_context} starts the "
                         "data loader's worker processes, and --dataloader_num_workers is 0 (torch refuses it once the "
                         "data is read); pass --dataloader_num_workers N, or drop it.")
    for name in ("logging_steps", "eval_steps", "save_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ValueError(f"--{name} must be > 0 (a number of steps, or a fraction of the run below 1), got "
                             f"{getattr(args, name)}.")
    modes = list(list_mode_options())
    if args.torch_compile_mode is not None and args.torch_compile_mode not in modes:
        raise ValueError(f"--torch_compile_mode {args.torch_compile_mode}: not a mode of torch.compile; choose one of "
                         f"{modes}.")
    backends = [backend.value.lower() for backend in DynamoBackend]
    if args.torch_compile_backend is not None and args.torch_compile_backend.lower() not in backends:
        raise ValueError(f"--torch_compile_backend {args.torch_compile_backend}: not a backend accelerate knows; "
                         f"choose one of {backends}.")
    if args.train_sampling_strategy in ("group_by_length", "batch_rebalance"):
        raise ValueError(
            f"--train_sampling_strategy {args.train_sampling_strategy} orders text samples by their length, and image "
            "samples have none (Trainer fails at the first batch asking for 'input_ids'); use random (the default) "
            "or sequential."
        )
    if args.load_best_model_at_end and args.eval_strategy == "no":
        raise ValueError(
            "--load_best_model_at_end true chooses the checkpoint by evaluation, but --eval_strategy is 'no': "
            "nothing would be chosen, and the last epoch's weights would be reported as the best checkpoint; "
            "set --eval_strategy and --save_strategy (e.g. epoch) with a held-out eval_dataset, or drop it."
        )
    if args.lr_decay_epochs is None and _changed(args, ("lr_decay_rate",)):
        raise ValueError(
            f"--lr_decay_rate {args.lr_decay_rate} multiplies the learning rate at each of --lr_decay_epochs, which is "
            "none, so it would change nothing; pass --lr_decay_epochs E1 E2 ..., or drop it."
        )
    if args.lr_decay_epochs is not None:
        replaced = {"lr_scheduler_type": "linear", "warmup_steps": 0, "lr_scheduler_kwargs": {}}
        for name, default in replaced.items():
            value = getattr(args, name)
            if value not in (default, None):
                raise ValueError(
                    f"--{name} {getattr(value, 'value', value)}: --lr_decay_epochs {args.lr_decay_epochs} sets the "
                    f"learning-rate schedule (x{args.lr_decay_rate} at each), which replaces Trainer's, so it would "
                    "change nothing; pass --lr_decay_epochs none to use it, or drop it."
                )
    _check_evaluation_and_saving(args)
    _check_scheduler_kwargs(args)
    _check_optimizer_settings(args)


def check_setup_values(args: TrainingArguments) -> None:
    """Values that `TrainingArguments.__post_init__` would fail on with a traceback that names no flag: refused
    before it runs, naming the flag."""
    if args.ddp_backend and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise ValueError(f"--ddp_backend {args.ddp_backend}: it sets how the processes of a distributed run talk, and "
                         "this is one process (torch finds no process group); drop it, or launch several with "
                         "torchrun --nproc_per_node N or accelerate launch.")
    if args.deepspeed and not is_deepspeed_available():
        raise ValueError(f"--deepspeed {args.deepspeed}: deepspeed is not installed here; pip install deepspeed, or "
                         "drop it.")
    decoded = {}  # each setting given as a JSON object, which transformers decodes
    for name in TrainingArguments._VALID_DICT_FIELDS:
        value = getattr(args, name)
        if isinstance(value, str) and value.startswith("{"):
            try:
                decoded[name] = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"--{name} {value}: not a JSON object ({err}); e.g. '{{\"key\": 1}}'.") from None
    settings = decoded.get("accelerator_config", args.accelerator_config)
    if isinstance(settings, AcceleratorConfig):
        settings = asdict(settings)
    elif isinstance(settings, str) and os.path.isfile(settings):  # a path: transformers reads it as a JSON file
        with open(settings) as f:
            settings = json.load(f)
    if isinstance(settings, dict):
        defaults = {f.name: f.default for f in fields(AcceleratorConfig)}
        unknown = sorted(set(settings) - set(defaults))
        if unknown:
            raise ValueError(f"--accelerator_config {args.accelerator_config}: AcceleratorConfig has no {unknown}; "
                             f"it takes {sorted(defaults)}.")
        changed = sorted(key for key in _BATCHING_KEYS if settings.get(key, defaults[key]) != defaults[key])
        if changed:
            raise ValueError(
                f"--accelerator_config {args.accelerator_config}: {changed[0]}={settings[changed[0]]} changes which "
                "images each process trains on at each step, which a run records as per_device_train_batch_size, "
                "world_size and seed (a folder trained with it would be taken for one trained without); keep "
                f"accelerate's {changed[0]}={defaults[changed[0]]}."
            )


def _changed(args: TrainingArguments, names: tuple[str, ...]) -> list[str]:
    """Those of the fields ``names`` that ``args`` sets to another value than their default (a field the installed
    transformers lacks is skipped)."""
    defaults = {f.name: f.default for f in fields(args) if f.name in names}
    return [name for name in names if name in defaults and getattr(args, name) != defaults[name]]


def _check_logger_settings(args: TrainingArguments) -> None:
    """The run's name is read by the loggers of ``report_to`` alone, ``project`` and the ``trackio_*`` settings by
    Trackio alone: without them each changes nothing."""
    loggers = sorted(set(args.report_to) - {"none"})
    if args.run_name is not None and not loggers:
        raise ValueError(f"--run_name {args.run_name} names the run for the loggers of --report_to, which is 'none', "
                         "so it would change nothing; pass --report_to tensorboard (or another logger), or drop it.")
    given = _changed(args, _TRACKIO_FIELDS)
    if given and "trackio" not in loggers:
        raise ValueError(f"--{given[0]} {getattr(args, given[0])}: only Trackio reads it, and --report_to is "
                         f"{' '.join(loggers) or 'none'}, so it would change nothing; pass --report_to trackio, or "
                         "drop it.")


def _check_evaluation_and_saving(args: TrainingArguments) -> None:
    """The settings of evaluating and saving during training that the chosen strategy never reads (transformers
    takes each without a word), and a checkpoint limit below 1, which transformers reads as no limit."""
    evaluation, saving = (getattr(s, "value", s) for s in (args.eval_strategy, args.save_strategy))
    if args.metric_for_best_model is not None and evaluation == "no":
        raise ValueError(f"--metric_for_best_model {args.metric_for_best_model} ranks the evaluations during "
                         "training, and --eval_strategy is 'no' (none), so it would change nothing; pass "
                         "--eval_strategy epoch or steps, or drop it.")
    if saving == "best" and args.metric_for_best_model is None:
        raise ValueError("--save_strategy best saves a checkpoint whenever --metric_for_best_model improves, and none "
                         "is set (Trainer would refuse it once the data is read); pass --metric_for_best_model "
                         "(e.g. accuracy) with --eval_strategy epoch, or choose --save_strategy epoch.")
    if args.greater_is_better is not None and args.metric_for_best_model is None:
        raise ValueError(f"--greater_is_better {str(args.greater_is_better).lower()} says which way "
                         "--metric_for_best_model improves, and none is set, so it would change nothing; pass "
                         "--metric_for_best_model, or drop it.")
    if args.eval_steps is not None and evaluation != "steps":
        raise ValueError(f"--eval_steps {args.eval_steps:g} is the interval of --eval_strategy steps, and "
                         f"--eval_strategy is '{evaluation}', so it would change nothing; pass --eval_strategy steps, "
                         "or drop it.")
    if args.eval_delay and evaluation == "no":
        raise ValueError(f"--eval_delay {args.eval_delay:g} postpones the first evaluation during training, and "
                         "--eval_strategy is 'no' (none), so it would change nothing; pass --eval_strategy epoch or "
                         "steps, or drop it.")
    if _changed(args, ("save_steps",)) and saving != "steps":
        raise ValueError(f"--save_steps {args.save_steps:g} is the interval of --save_strategy steps, and "
                         f"--save_strategy is '{saving}', so it would change nothing; pass --save_strategy steps, or "
                         "drop it.")
    if args.save_total_limit is not None and args.save_total_limit < 1:
        raise ValueError(f"--save_total_limit {args.save_total_limit}: transformers deletes no checkpoint for a limit "
                         "below 1, so every checkpoint would be kept; pass N >= 1 to keep the last N, --save_strategy "
                         "no to save none, or drop it to keep them all.")


def _check_scheduler_kwargs(args: TrainingArguments) -> None:
    """``lr_scheduler_kwargs`` must be settings of ``lr_scheduler_type``'s own schedule function."""
    given = args.lr_scheduler_kwargs
    if not given:
        return
    if not isinstance(given, dict):
        raise ValueError(f"--lr_scheduler_kwargs {given!r}: pass a JSON object, e.g. '{{\"num_cycles\": 0.5}}'.")
    kind = SchedulerType(args.lr_scheduler_type)
    parameters = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[kind]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):  # passed on to torch's own scheduler
        return
    accepted = sorted(set(parameters) - {"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"})
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(
            f"--lr_scheduler_kwargs {given}: --lr_scheduler_type {kind.value} takes {accepted or 'no settings'}, "
            f"not {unknown}."
        )


def _check_optimizer_settings(args: TrainingArguments) -> None:
    """Each optimizer setting given must reach the optimizer. transformers silently drops an ``optim_args`` key
    its optimizer does not read (``momentm=0.9`` would train SGD without momentum), and Adam's betas and
    epsilon for an optimizer without them; each is refused here, found by building the optimizer's arguments
    with and without it (`Trainer.get_optimizer_cls_and_kwargs`)."""
    pairs = [item.split("=") for item in args.optim_args.replace(" ", "").split(",")] if args.optim_args else []
    if any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise ValueError(
            f"--optim_args {args.optim_args!r}: write key=value pairs separated by commas, e.g. momentum=0.9."
        )
    keys = [pair[0] for pair in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"--optim_args {args.optim_args!r}: {twice[0]} is given twice, and only the last would count; "
                         "give it once.")
    optim = getattr(args.optim, "value", args.optim)
    try:
        kwargs = Trainer.get_optimizer_cls_and_kwargs(args)[1]
    except ImportError as err:  # its package is not installed
        raise ValueError(f"--optim {optim}: {err}") from None
    except (ValueError, TypeError) as err:
        if not pairs:
            raise ValueError(f"--optim {optim}: {err}") from None
        raise ValueError(f"--optim_args {args.optim_args!r}: --optim {optim} cannot take it ({err}).") from None
    except Exception:  # an optimizer that needs the model (GaLore, LOMO...): Trainer checks it when it builds it
        return
    defaults = {f.name: f.default for f in fields(TrainingArguments) if f.name in _ADAM_FIELDS}
    given = [(f"--optim_args {args.optim_args!r}: {key}", "optim_args",
              ",".join(f"{k}={v}" for k, v in pairs if k != key)) for key, _ in pairs]
    given += [(f"--{name} {getattr(args, name)}", name, default) for name, default in defaults.items()
              if getattr(args, name) != default]
    for flag, name, without in given:
        probe = copy.copy(args)  # the config without this setting
        setattr(probe, name, without)
        if Trainer.get_optimizer_cls_and_kwargs(probe)[1] == kwargs:
            clear = ' (--optim_args "" clears a config\'s)' if name == "optim_args" else ""
            raise ValueError(
                f"{flag} changes nothing for --optim {optim} (a setting it does not read, or the value it uses "
                f"anyway); check the name, or drop it{clear}."
            )
