"""What defines a training run, recorded in every folder it saves, and the check that a folder fits a command.

A folder written by `DistillationTrainer` (the final one and every ``checkpoint-N``) carries
``config.json["ltkd"]["settings"]``: the data and its long-tailed construction, the architecture and where its
weights started, the teacher, the objective, the schedule and the training seed. A finished stage is reused, or a
checkpoint resumed, only when these equal the command's; otherwise the run stops before training and names each
difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .config import DistillationConfig
from .data.split_info import SplitInfo
from .models.loading import unwrap_timm

__all__ = ["StaleOutputError", "check_settings", "model_source", "read_settings", "run_settings"]

_SCHEDULE_FIELDS = (
    "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
    "optim", "optim_args", "weight_decay", "max_grad_norm", "lr_scheduler_type", "warmup_steps",
    "lr_decay_epochs", "lr_decay_rate",
)


class StaleOutputError(ValueError):
    """A folder holds a run made with other settings than the command's."""


def model_source(model: nn.Module) -> dict[str, Any]:
    """The architecture of ``model`` and the checkpoint its weights started from (``None``: random init)."""
    timm_model = unwrap_timm(model)
    config = getattr(model, "config", None)
    return {
        "architecture": timm_model.pretrained_cfg.get("architecture") or type(timm_model).__name__,
        "init": getattr(config, "base_model_source", None),
    }


def run_settings(
    args: DistillationConfig, split_info: SplitInfo, *, model: nn.Module, teacher: str | None
) -> dict[str, Any]:
    """The settings that define a run of ``model`` on ``split_info`` with ``args`` (JSON-ready)."""
    settings = {
        "data": split_info.to_dict(),
        "model": model_source(model),
        "teacher": teacher,
        "objective": {
            "distill_loss": args.distill_loss,
            "loss_settings": args.loss_settings() if args.distill_loss != "ce" else {},
            "ce_weight": args.ce_weight,
            "ce_logit_adjustment": args.ce_logit_adjustment,
            "num_groups": args.num_groups,
            "warmup_epochs": args.warmup_epochs,
        },
        "schedule": {name: getattr(args, name) for name in _SCHEDULE_FIELDS},
        "world_size": args.world_size,
        "seed": args.seed,
    }
    return json.loads(json.dumps(settings, default=str))


def read_settings(folder: str | Path) -> dict[str, Any] | None:
    """The settings recorded in ``folder/config.json``, or ``None`` when it records none."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("ltkd", {}).get("settings")
    except (ValueError, AttributeError):
        return None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_ABSENT = object()


def _short(value: Any) -> str:
    if value is _ABSENT:
        return "not set"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_settings(folder: str | Path, current: Mapping[str, Any], *, what: str = "the run") -> None:
    """Raise `StaleOutputError` naming every setting in which ``folder``'s recorded run differs from ``current``.

    A folder without recorded settings (not written by this library) is refused too: nothing says what it holds.
    """
    recorded = read_settings(folder)
    fixes = "pass --overwrite_output_dir true to train it again, or choose another --output_dir"
    if recorded is None:
        raise StaleOutputError(
            f"{folder} holds {what} but records no settings (not written by ltkd_hf's trainer), so it may come from "
            f"another command; {fixes}."
        )
    old, new = _flatten(recorded), _flatten(dict(current))
    differences = [
        f"{key.rsplit('.', 1)[-1]} ({key}): {_short(old.get(key, _ABSENT))} in {folder}, "
        f"{_short(new.get(key, _ABSENT))} now"
        for key in sorted(set(old) | set(new))
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    ]
    if differences:
        raise StaleOutputError(
            f"{folder} holds {what} made with other settings than this command:\n  " + "\n  ".join(differences)
            + f"\nIt was not reused. To replace it, {fixes}."
        )
