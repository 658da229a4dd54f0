"""What defines a training run, recorded in every folder it saves, and the check that a folder fits a command.

A folder written by `DistillationTrainer` (the final one and every ``checkpoint-N``) carries
``config.json["ltkd"]["settings"]``: the data and its long-tailed construction, the architecture and where its
weights started, the teacher, the objective, the schedule and the training seed. A finished stage is reused, or a
checkpoint resumed, only when these equal the command's; otherwise the run stops before training and names each
difference.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .config import DistillationConfig
from .data.fingerprint import folder_fingerprint
from .data.split_info import SplitInfo
from .models.loading import unwrap_timm
from .training_fields import OBJECTIVE_FIELDS, WEIGHT_FIELDS

logger = logging.getLogger(__name__)

__all__ = ["StaleOutputError", "TeacherName", "check_settings", "model_source", "published_source", "read_settings",
           "run_settings"]

class StaleOutputError(ValueError):
    """A folder holds a run made with other settings than the command's."""


def published_source(source: str) -> str:
    """A model source as a card or a report (which a push publishes) names it: a local folder or file (a path, or
    ``local-dir:`` and a path) by its name, never where it lies on this machine; a Hub id or a timm name as it is.
    The recorded settings keep the path, for the run's own checks."""
    prefix = "local-dir:" if source.startswith("local-dir:") else ""
    path = Path(source.removeprefix(prefix)).expanduser()
    return prefix + path.resolve().name if prefix or path.exists() else source


class TeacherName(str):
    """How the students' recorded settings name their teacher (a ``str``: a Hub id at its commit, a local folder by
    its absolute path and fingerprint, a teacher trained in this run by its stage), with ``published``: the same
    name without this machine's paths, for the card and the report; and ``folder``: the folder its weights are in,
    when they are a folder on disk (a teacher trained here, a ``--teacher`` folder)."""

    folder: Path | None
    published: str

    def __new__(cls, name: str, folder: Path | None = None, published: str | None = None) -> "TeacherName":
        named = super().__new__(cls, name)
        named.folder, named.published = folder, published or name
        return named


def model_source(model: nn.Module, *, published: bool = False) -> dict[str, Any]:
    """The architecture of ``model``, the checkpoint its weights started from (``None``: random init; a Hub repo at
    its commit; a folder with its files' fingerprint, as a folder trained again in place is another start) and the
    input size it reads. ``published``: a folder by its name (`published_source`), for a card or a report."""
    timm_model = unwrap_timm(model)
    init = getattr(getattr(model, "config", None), "base_model_source", None)
    if init is not None and init.startswith("local-dir:"):
        init = f"{published_source(init) if published else init} [{folder_fingerprint(init.removeprefix('local-dir:'))}]"
    return {
        "architecture": timm_model.pretrained_cfg.get("architecture") or type(timm_model).__name__,
        "init": init,
        "input_size": list(timm_model.pretrained_cfg.get("input_size") or []),
    }


def run_settings(
    args: DistillationConfig, split_info: SplitInfo, *, model: nn.Module, teacher: str | None
) -> dict[str, Any]:
    """The settings that define a run of ``model`` on ``split_info`` with ``args`` (JSON-ready)."""
    data = split_info.to_dict()
    data.pop("test_split")  # where the run is evaluated: the weights do not depend on it
    if args.distill_loss == "ce":  # cross-entropy alone: the distillation settings do not reach the weights
        objective = {name: getattr(args, name) for name in ("distill_loss", "ce_weight", "ce_logit_adjustment",
                                                            "label_smoothing_factor")}
    else:
        objective = {name: getattr(args, name) for name in OBJECTIVE_FIELDS}
        objective["distill_loss_kwargs"] = args.loss_settings()  # every setting, the defaults included
    settings = {
        "data": data,
        "model": model_source(model),
        "teacher": teacher,
        "objective": objective,
        # fields of a newer transformers than the one installed are recorded as absent (None)
        "schedule": {name: getattr(args, name, None) for name in WEIGHT_FIELDS if name not in OBJECTIVE_FIELDS},
        "world_size": args.world_size,
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


def _shown(old: Any, new: Any) -> tuple[str, str]:
    """Two differing values as the message shows them: whole when short, else both cut to the same 57-character
    window, starting a little before the first character where they differ (so the difference is what is shown)."""
    texts = ["not set" if value is _ABSENT else json.dumps(value) for value in (old, new)]
    if max(map(len, texts)) <= 60:
        return texts[0], texts[1]
    first = next((i for i, (a, b) in enumerate(zip(*texts)) if a != b), min(map(len, texts)))
    start = max(0, first - 20)
    return tuple(("..." if start else "") + t[start:start + 57] + ("..." if len(t) > start + 57 else "") for t in texts)


def check_settings(
    folder: str | Path, current: Mapping[str, Any], *, what: str = "the run", flags: Mapping[str, str] | None = None,
    fix: str | None = "pass --overwrite_output_dir true to train it again, or choose another --output_dir",
) -> None:
    """Raise `StaleOutputError` naming every setting in which ``folder``'s recorded run differs from ``current``,
    with the command-line flag that sets it where ``flags`` (setting name -> flag) says it is not ``--<name>`` (the
    teacher stage's epochs are ``--teacher_epochs``), and ends with ``fix`` (``None``: the caller says the fix, for
    several folders at once).

    A folder without recorded settings (not written by this library) is refused too: nothing says what it holds.
    The data is identified by its content: when the recorded fingerprint equals the current one, another path to
    the same files is a cosmetic difference, logged and not refused.
    """
    recorded = read_settings(folder)
    if recorded is None:
        raise StaleOutputError(
            f"{folder} holds {what} but records no settings (not written by ltkd_hf's trainer), so it may come from "
            "another command" + (f"; {fix}." if fix else ".")
        )
    old, new = _flatten(recorded), _flatten(dict(current))
    fingerprint = old.get("data.fingerprint")
    if fingerprint is not None and fingerprint == new.get("data.fingerprint") and old.get("data.source") != new.get(
        "data.source"
    ):
        logger.info("%s was made from the same data files at %s (now %s): same data.", folder,
                    old.get("data.source"), new.get("data.source"))
        old.pop("data.source"), new.pop("data.source")
    flags = flags or {}
    differences = [
        "{} ({}{}): {} in {}, {} now".format(name, key, f", set by {flags[name]}" if name in flags else "", shown[0],
                                             folder, shown[1])
        for key in sorted(set(old) | set(new))
        for name in [key.rsplit(".", 1)[-1]]
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
        for shown in [_shown(old.get(key, _ABSENT), new.get(key, _ABSENT))]
    ]
    if differences:
        differing = {key for key in set(old) | set(new) if old.get(key, _ABSENT) != new.get(key, _ABSENT)}
        only_data_files = "data.fingerprint" in differing and differing <= {"data.fingerprint", "data.source"}
        why = (
            "other data: the dataset's files differ (images edited, added, removed or renamed)"
            if only_data_files
            else "other settings than this command"
        )
        raise StaleOutputError(
            f"{folder} holds {what} made with {why}: " + "; ".join(differences) + ". It was not reused"
            + (f". To replace it, {fix}." if fix else ".")
        )
