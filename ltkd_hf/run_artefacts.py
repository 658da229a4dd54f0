"""What a distillation run leaves behind, and the check on the checkpoint it resumes from.

`RunArtefacts` writes the canonical student folder (``save_model()`` and every checkpoint: timm weights and a
config.json that timm and transformers both load, recording the run's settings), the loss modules' state in each
checkpoint, the report and the group model card, and reads a checkpoint back. `DistillationTrainer` holds one and
calls it from Trainer's hooks.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from timm.data import resolve_data_config
from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ._atomic import atomic_write_files
from .config import DistillationConfig
from .data.split_info import SplitInfo
from .distillation_model import DistillationModel
from .evaluation.metrics import evaluation_report
from .evaluation.report import format_report_tables, write_report
from .groups import ClassGroups
from .hub.card import render_model_card, required_results, write_model_card
from .hub.save import WEIGHTS_NAME, save_student
from .models.loading import unwrap_timm
from .provenance import TeacherName, check_settings, model_source, run_settings

logger = logging.getLogger(__name__)

__all__ = ["LOSS_STATE_NAME", "RunArtefacts", "check_resumable", "checkpoints", "evaluated_weights", "is_last_step"]

# The loss's own state (ReviewKD's fusion modules) in each checkpoint-N folder; never in the model folder.
LOSS_STATE_NAME = "distill_loss.safetensors"
# transformers' checkpoint folders (what get_last_checkpoint finds and resume_from_checkpoint=True resumes)
_CHECKPOINT_FOLDER = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-\d+")


def checkpoints(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """``folder``'s checkpoint-N folders, oldest first, as (complete, cut short). Trainer writes a checkpoint's
    ``trainer_state.json`` after its weights, optimizer and RNG state: a folder without a readable one is a save a
    kill interrupted, which cannot be resumed (transformers' ``get_last_checkpoint`` would still pick it)."""
    found = sorted((p for p in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if _CHECKPOINT_FOLDER.fullmatch(p.name)
                    and p.is_dir()), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    complete = [p for p in found if _readable_json(p / TRAINER_STATE_NAME)]
    return complete, [p for p in found if p not in complete]


def is_last_step(state: TrainerState) -> bool:
    """Whether a checkpoint's Trainer state is the finished run's last step."""
    return state.global_step >= state.max_steps > 0


def check_resumable(checkpoint: str | os.PathLike) -> TrainerState:
    """The Trainer state of ``checkpoint``, once checked that resuming it continues the run. Refused: a checkpoint
    saved with ``save_only_model``, which transformers resumes without a word, with a new optimizer (no momentum),
    its learning-rate schedule from the first step and fresh random states, so the resumed run trains another model
    than the uninterrupted one. Trainer writes every process's random state (``rng_state*.pth``) into every other
    checkpoint, whatever the engine. The finished run's last checkpoint is loaded, not trained further
    (`DistillationTrainer.train`), so it needs none."""
    path = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if not _readable_json(Path(path)):
        raise ValueError(f"{checkpoint} holds no readable {TRAINER_STATE_NAME}, so it is not a checkpoint-N folder "
                         "Trainer finished saving; pass one (--resume_from_checkpoint), or train from the start.")
    state = TrainerState.load_from_json(path)
    if not is_last_step(state) and not any(Path(checkpoint).glob("rng_state*.pth")):
        raise ValueError(
            f"{checkpoint} holds the model's weights only (saved with --save_only_model true): no optimizer, "
            "learning-rate schedule or random state, so training resumed from it would make another model than the "
            "uninterrupted run; train again from the start (--resume_from_checkpoint false), and drop "
            "--save_only_model to save checkpoints that resume."
        )
    return state


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def evaluated_weights(load_best_model_at_end: bool, max_steps: int = -1) -> str:
    """Which weights a saved folder holds, so which ones its report scored (the recipes keep the last epoch's:
    choosing the best epoch on the test split would leak it into model selection). A run of ``max_steps`` may end
    inside an epoch: its weights are those after its last step."""
    if load_best_model_at_end:
        return "best checkpoint"
    return f"final weights (after step {max_steps})" if max_steps > 0 else "last-epoch weights"


def lr_schedule(args) -> str:
    """The learning-rate schedule ``args`` trains with, in words: the step decay of ``lr_decay_epochs``, or
    transformers' ``lr_scheduler_type`` with its warm-up."""
    if args.lr_decay_epochs is not None:
        epochs = ", ".join(f"{e:g}" for e in args.lr_decay_epochs)
        return f"x {args.lr_decay_rate:g} at epochs {epochs}"
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if args.lr_scheduler_kwargs:
        schedule += f" {args.lr_scheduler_kwargs}"
    if args.warmup_steps:  # transformers: a number below 1 is a share of the steps
        share = args.warmup_steps < 1
        schedule += f", warm-up {args.warmup_steps:g}" + (" of the steps" if share else " steps")
    return schedule


class RunArtefacts:
    """The files of one run: what they record and how they are written and read back.

    Args:
        model: the `DistillationModel` the run trains.
        args: the run's `DistillationConfig`.
        split_info: the training split.
        groups: its class groups.
        teacher_name: where the teacher came from (``None``: the run has no teacher); a `TeacherName` also says how
            the card and the report publish it, without this machine's paths.
        caveats: what the report and the card state about the data beside their numbers (one sentence each).
    """

    def __init__(
        self,
        model: DistillationModel,
        args: DistillationConfig,
        split_info: SplitInfo,
        groups: ClassGroups,
        teacher_name: str | None,
        caveats: Sequence[str] = (),
    ) -> None:
        self.model, self.args, self.split_info, self.groups, self.teacher_name = (
            model, args, split_info, groups, teacher_name
        )
        self.caveats = list(caveats)
        self.published_teacher = teacher_name.published if isinstance(teacher_name, TeacherName) else teacher_name
        # The student's structure without its weights: folders are written from the state Trainer hands over (under
        # FSDP or DeepSpeed ZeRO-3 the student's own tensors are shards, and the engine gathers the whole state).
        self._skeleton = copy.deepcopy(unwrap_timm(model.student)).to("meta")
        self.row: str | None = None  # the report row of this run's model, once `report` ran

    def settings(self) -> dict[str, Any]:
        """The settings that define this run, as recorded in every folder it saves (see `ltkd_hf.provenance`)."""
        return run_settings(self.args, self.split_info, model=self.model.student, teacher=self.teacher_name)

    # -- folders and checkpoints ---------------------------------------------------------------
    def save(self, output_dir: str | os.PathLike, state: Mapping[str, torch.Tensor]) -> None:
        """Write the canonical folder of the student in ``state`` (the `DistillationModel`'s state) into
        ``output_dir``, and in a checkpoint-N folder also the loss's state (``distill_loss.safetensors``)."""
        loss_state = self.model.loss_state(state)
        if loss_state and _CHECKPOINT_FOLDER.fullmatch(Path(output_dir).name):
            tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in loss_state.items()}
            atomic_write_files(output_dir, {LOSS_STATE_NAME: lambda path: save_file(tensors, str(path))})
        student = self._skeleton
        student.load_state_dict(self.model.student_state(state), assign=True)
        extra = {"settings": self.settings(), "groups": self.groups.to_dict(), "objective": self.objective}
        save_student(
            student,
            output_dir,
            label_names=self.split_info.label_names,
            extra_config={"ltkd": extra},
            data_config=resolve_data_config(model=student),
        )
        student.to("meta")  # hold no reference to the state's tensors between saves
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def load(self, checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
        """The `DistillationModel` state that `save` wrote into the checkpoint folder ``checkpoint``, on the CPU."""
        student = load_file(os.path.join(checkpoint, WEIGHTS_NAME), device="cpu")
        loss: dict[str, torch.Tensor] = {}
        if self.model.distill_loss.state_dict():
            path = os.path.join(checkpoint, LOSS_STATE_NAME)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{checkpoint} holds no {LOSS_STATE_NAME}, but --distill_loss {self.args.distill_loss} trains "
                    "modules of its own whose state an exact resume needs; resume from a checkpoint-N folder written "
                    "by DistillationTrainer with this loss, or start from scratch."
                )
            loss = load_file(path, device="cpu")
        return self.model.join_state(student, loss)

    def checkpoint_to_resume(self, resume_from_checkpoint: str | os.PathLike | bool | None) -> str | None:
        """The folder ``train(resume_from_checkpoint=...)`` resumes (``True``: the last checkpoint in
        ``output_dir``), once checked: it exists and records this run's settings."""
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return None
        if resume_from_checkpoint is True:
            output_dir = self.args.output_dir
            complete = checkpoints(output_dir)[0] if os.path.isdir(output_dir) else []
            resume_from_checkpoint = str(complete[-1]) if complete else None
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"--resume_from_checkpoint true, but {output_dir} holds no complete checkpoint-* folder; drop it "
                    "to start from scratch, or pass the checkpoint folder's path."
                )
        if not os.path.isdir(resume_from_checkpoint):
            raise FileNotFoundError(
                f"--resume_from_checkpoint {str(resume_from_checkpoint)!r} is not a folder; pass a checkpoint-N "
                "folder of an earlier run with the same settings."
            )
        check_settings(resume_from_checkpoint, self.settings(), what="a checkpoint")
        return str(resume_from_checkpoint)

    # -- report and card -----------------------------------------------------------------------
    @property
    def objective(self) -> str:
        """The objective as the folders, the report and the card describe it: the cross-entropy as trained
        (weight, logit adjustment, label smoothing) and the distillation loss."""
        args = self.args
        ce = "CE" if not args.ce_logit_adjustment else f"logit-adjusted CE (tau {args.ce_logit_adjustment:g})"
        if args.label_smoothing_factor:
            ce += f" with label smoothing {args.label_smoothing_factor:g}"
        if args.ce_weight != 1:
            ce = f"{args.ce_weight:g} x {ce}"
        if args.distill_loss == "ce":
            return f"{ce} only: no distillation term"
        ramp = f"ramp({args.warmup_epochs:g} warm-up epochs) x " if args.warmup_epochs else ""
        return f"{ce} + {ramp}[{self.model.distill_loss.describe()}]"

    def report(
        self,
        probabilities: Sequence[np.ndarray],
        labels: np.ndarray,
        *,
        name: str,
        other_reports: Mapping[str, Mapping[str, Any]] | None,
        output_dir: str | os.PathLike,
        metadata: Mapping[str, Any],
        validation: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
        scored: Mapping[str, Any] | None = None,
    ) -> dict[str, dict]:
        """``{row name: evaluation_report}`` for the model's (and the teacher's, second) predicted probabilities on
        ``labels`` (accuracy, ECE and group mass per group), plus ``other_reports``; with ``validation``
        (``(probabilities, labels)`` on the validation split) each scored row also gets ``"validation"``: its
        accuracies there. Written to ``output_dir`` as report.json (``metadata``: what it states about the run,
        `report_metadata` for a run's own; ``scored``: what was scored), report.md and the plots."""
        counts = self.split_info.class_counts

        def score(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
            return evaluation_report(probs.argmax(-1), labels, class_counts=counts, groups=self.groups,
                                     probabilities=probs)

        rows = {name: 0} if self.teacher_name is None else {"teacher": 1, name: 0}
        other_reports = other_reports or {}
        clash = [row for row in rows if row in other_reports]
        if clash:  # the scored row would replace the given one, and the report would hold one model under two names
            raise ValueError(
                f"other_reports has a row named {clash[0]!r}, which this report scores itself; name this model's row "
                "with name=... or rename that row."
            )
        reports: dict[str, dict] = {key: dict(value) for key, value in other_reports.items()}
        for row, at in rows.items():
            reports[row] = score(probabilities[at], labels)
            if validation is not None:
                held = score(validation[0][at], validation[1])
                reports[row]["validation"] = {key: v for key, v in held.items()
                                              if key.startswith("accuracy") or key in ("per_class", "test_counts")}
        reports = {row: reports[row] for row in ["teacher", *[r for r in reports if r != "teacher"]] if row in reports}
        self.row = name
        if self.args.should_save:
            write_report(output_dir, reports, class_counts=counts, groups=self.groups, metadata=metadata,
                         label_names=self.split_info.label_names, scored=scored)
        return reports

    def report_metadata(self, validated: bool) -> dict[str, Any]:
        """What report.json and report.md state about the run."""
        info = self.split_info
        held_out = "none: nothing was chosen on held-out data"
        if validated:
            held_out = (f"{info.validation_holdout['per_class']} training images per class held out, balanced"
                        if info.validation_holdout else "the dataset's validation split")
        return {
            "validation data": held_out,
            "dataset": info.published_source or "not recorded",
            "training split": info.describe(),
            "evaluated on": info.test_split or "the eval dataset",
            "model": model_source(self.model.student, published=True),
            "teacher": self.published_teacher,
            "objective": self.objective,
            "training seed": self.args.seed,
            "evaluated": evaluated_weights(self.args.load_best_model_at_end, self.args.max_steps),
        }

    def write_card(
        self,
        model_name: str,
        results: Mapping[str, float],
        report: Mapping[str, Mapping[str, Any]] | None,
        license: str,
    ) -> None:
        """Write the group model card into ``args.output_dir/README.md`` (see
        `DistillationTrainer.create_model_card`), with the report's table and plots when there is a ``report``."""
        missing = [key for key in required_results(self.groups) if key not in results]
        if missing:
            raise ValueError(f"evaluate() gave no {missing}; the card needs overall and per-group accuracy.")
        args, out = self.args, Path(self.args.output_dir)
        plots = [p for p in ("per_class_accuracy.png", "teacher_bias.png") if (out / p).is_file()] if report else []
        config, source = getattr(self.model.student, "config", None), model_source(self.model.student, published=True)
        card = render_model_card(
            model_name=model_name,
            architecture=source["architecture"],
            student_init=source["init"],
            base_model=getattr(config, "base_model", None),
            teacher=self.published_teacher,
            split_info=self.split_info,
            groups=self.groups,
            loss_name=args.distill_loss,
            loss_description=self.objective,
            loss_config={
                **(args.loss_settings() if args.distill_loss != "ce" else {}),
                "ce_weight": args.ce_weight,
                "ce_logit_adjustment": args.ce_logit_adjustment,
                "label_smoothing_factor": args.label_smoothing_factor,
                "warmup_epochs": args.warmup_epochs,
            },
            training={
                "training seed": args.seed,
                "epochs": args.num_train_epochs if args.max_steps <= 0 else f"{args.max_steps} steps",
                "batch size (per device x accumulation x processes)": (
                    f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} x {args.world_size}"
                ),
                "optimizer": f"{getattr(args.optim, 'value', args.optim)} {args.optim_args or ''}".strip()
                + f", learning rate {args.learning_rate:g}, weight decay {args.weight_decay:g}",
                "learning-rate schedule": lr_schedule(args),
                "gradient clipping": f"norm {args.max_grad_norm:g}" if args.max_grad_norm else "none",
                "weights evaluated": evaluated_weights(args.load_best_model_at_end, args.max_steps),
            },
            results=results,
            plots=plots,
            comparison_table=format_report_tables(report, self.groups) if report else None,
            test_counts=report[self.row].get("test_counts") if report else None,
            caveats=self.caveats,
            license=license,
        )
        write_model_card(out, card)
