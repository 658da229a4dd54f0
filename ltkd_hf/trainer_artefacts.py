"""What a distillation run leaves behind, as `DistillationTrainer` methods: the canonical model folder in
``save_model()`` and every checkpoint (with the run's settings), exact and checked resuming, the report, the
group model card and the push."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from timm.data import resolve_data_config
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint

from ._atomic import atomic_write_files
from .evaluation.metrics import evaluation_report, group_mass
from .evaluation.report import format_group_table, write_report
from .hub.card import REQUIRED_RESULTS, render_model_card, write_model_card
from .hub.save import WEIGHTS_NAME, save_student
from .models.loading import unwrap_timm
from .provenance import check_settings, model_source, read_settings, run_settings

logger = logging.getLogger("ltkd_hf.trainer")

__all__ = ["LOSS_STATE_NAME", "RunArtefactsMixin"]

# The loss's own state (ReviewKD's fusion modules) in each checkpoint-N folder; never in the model folder.
LOSS_STATE_NAME = "distill_loss.safetensors"


class RunArtefactsMixin(Trainer):
    """The folder, checkpoints, resuming, report, card and push of `DistillationTrainer` (which sets the
    ``split_info``, ``groups``, ``loss_fn``, ``teacher`` and ``teacher_name`` these methods read)."""

    # -- the run's settings, saving and resuming ----------------------------------------------
    def run_settings(self) -> dict[str, Any]:
        """The settings that define this run, as recorded in every folder it saves (see `ltkd_hf.provenance`)."""
        return run_settings(self.args, self.split_info, model=self.model, teacher=self.teacher_name)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the canonical folder (timm weights + a config.json timm and transformers both load, with this
        run's settings under ``"ltkd"``) instead of transformers' TimmWrapper layout."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        timm_model = unwrap_timm(self.model)
        extra = {"ltkd": {"settings": self.run_settings(), "groups": self.groups.to_dict(), "objective": self.loss_fn.describe()}}
        save_student(
            timm_model,
            output_dir,
            label_names=self.split_info.label_names,
            extra_config=extra,
            data_config=resolve_data_config(model=timm_model),
        )
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _save_checkpoint(self, model: torch.nn.Module, trial) -> None:
        """Trainer's checkpoint, plus the loss's own state (ReviewKD's ABFs) as ``distill_loss.safetensors``, written
        first: the folder is complete once Trainer's files (trainer_state.json last) are there."""
        state = self.loss_fn.state_dict()
        if state and self.args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"  # the folder Trainer's checkpoint goes to
            folder = os.path.join(self._get_output_dir(trial=trial), name)
            tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
            atomic_write_files(folder, {LOSS_STATE_NAME: lambda path: save_file(tensors, str(path))})
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        self._load_loss_state(resume_from_checkpoint)
        if read_settings(resume_from_checkpoint) is None:  # a folder in another layout: Trainer's own loading
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        state = load_file(os.path.join(resume_from_checkpoint, WEIGHTS_NAME), device="cpu")
        unwrap_timm(model if model is not None else self.model).load_state_dict(state)

    def _load_loss_state(self, checkpoint: str) -> None:
        """Restore the loss's own state (in place: the optimizer keeps its parameters) from a checkpoint folder."""
        if not self.loss_fn.state_dict():
            return
        path = os.path.join(checkpoint, LOSS_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} holds no {LOSS_STATE_NAME}, but --distill_loss {self.args.distill_loss} trains modules "
                "of its own whose state an exact resume needs; resume from a checkpoint-N folder written by "
                "DistillationTrainer with this loss, or start from scratch."
            )
        self.loss_fn.load_state_dict(load_file(path, device=str(self.args.device)))

    def _load_best_model(self) -> None:
        logger.info("Loading best model from %s (score: %s).", self.state.best_model_checkpoint, self.state.best_metric)
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`; a checkpoint is resumed only when the settings it records equal this run's."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"--resume_from_checkpoint true, but {self.args.output_dir} holds no checkpoint-* folder; drop it "
                    "to start from scratch, or pass the checkpoint folder's path."
                )
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            if not os.path.isdir(resume_from_checkpoint):
                raise FileNotFoundError(
                    f"--resume_from_checkpoint {str(resume_from_checkpoint)!r} is not a folder; pass a checkpoint-N "
                    "folder of an earlier run with the same settings."
                )
            check_settings(resume_from_checkpoint, self.run_settings(), what="a checkpoint")
            state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
            if state.global_step >= state.max_steps > 0:
                # A checkpoint of the finished run: transformers would resume it for one more step when max_steps
                # ends mid-epoch, so load it and train no further.
                logger.info("%s is the run's last step: loaded, not trained further.", resume_from_checkpoint)
                self._load_from_checkpoint(resume_from_checkpoint)
                self.state = state
                return TrainOutput(state.global_step, float("nan"), {})
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
        )

    # -- report, card, push --------------------------------------------------------------------
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
    ) -> dict[str, dict]:
        """Score the model (and the teacher) on ``eval_dataset`` (default: the trainer's) from one ``predict()``
        pass, write report.json, report.md and the plots into ``output_dir`` (default ``args.output_dir``), and
        return ``{row name: evaluation_report}``.

        ``name`` is the model's row (default `model_label`; "teacher" for a cross-entropy run that trains the
        teacher, whose own group mass is then plotted); ``other_reports`` adds rows (e.g. the CE student's).
        """
        self._report_mode = True
        try:
            out = self.predict(eval_dataset if eval_dataset is not None else self.eval_dataset, metric_key_prefix="test")
        finally:
            self._report_mode = False
        probs = out.predictions if isinstance(out.predictions, tuple) else (out.predictions,)
        labels = np.asarray(out.label_ids)
        counts, k = self.split_info.class_counts, self.args.num_groups
        name = name or self.model_label
        reports: dict[str, dict] = {}
        mass = None
        if self.teacher is not None:
            reports["teacher"] = evaluation_report(probs[1].argmax(-1), labels, class_counts=counts, num_groups=k)
            mass = group_mass(probs[1], self.groups)
        elif name == "teacher":
            mass = group_mass(probs[0], self.groups)
        reports.update({key: dict(value) for key, value in (other_reports or {}).items()})
        reports[name] = evaluation_report(probs[0].argmax(-1), labels, class_counts=counts, num_groups=k)
        if self.args.should_save:
            write_report(
                output_dir or self.args.output_dir,
                reports,
                class_counts=counts,
                groups=self.groups,
                teacher_group_mass=mass,
                metadata=self._report_metadata(),
            )
        self.report = reports
        return reports

    def _report_metadata(self) -> dict[str, Any]:
        info = self.split_info
        return {
            "dataset": info.source,
            "training split": info.describe(),
            "evaluated on": info.test_split or "the eval dataset",
            "model": model_source(self.model),
            "teacher": self.teacher_name,
            "objective": self.loss_fn.describe(),
            "training seed": self.args.seed,
            "evaluated": "last-epoch weights" if not self.args.load_best_model_at_end else "best checkpoint",
        }

    def _card_results(self) -> dict[str, float]:
        """The latest evaluation's overall and per-group accuracy (running ``evaluate()`` when there is none)."""
        for entry in reversed(self.state.log_history):
            if "eval_accuracy" in entry:
                metrics = entry
                break
        else:
            metrics = self.evaluate()
        return {k.removeprefix("eval_"): float(v) for k, v in metrics.items() if k.removeprefix("eval_").startswith("accuracy")}

    def create_model_card(self, model_name: str | None = None, license: str = "apache-2.0", **kwargs: Any) -> None:
        """Write the group model card into ``args.output_dir/README.md``: ``model-index`` with overall / head /
        medium / tail accuracy from the latest ``evaluate()``, where each model started, the long-tailed split as
        it was made, the loss and its settings, the seeds, the report's table and plots when `write_report` ran."""
        results = self._card_results()
        if not self.is_world_process_zero():
            return
        missing = [key for key in REQUIRED_RESULTS if key not in results]
        if missing:
            raise ValueError(f"evaluate() gave no {missing}; the card needs overall and per-group accuracy.")
        out = Path(self.args.output_dir)
        plots = [p for p in ("per_class_accuracy.png", "teacher_bias.png") if (out / p).is_file()] if self.report else []
        source = model_source(self.model)
        card = render_model_card(
            model_name=getattr(self, "hub_model_id", None) or self.args.hub_model_id or model_name or out.name,
            architecture=source["architecture"],
            student_init=source["init"],
            base_model=getattr(getattr(self.model, "config", None), "base_model", None),
            teacher=self.teacher_name,
            split_info=self.split_info,
            groups=self.groups,
            loss_name=self.args.distill_loss,
            loss_description=self.loss_fn.describe(),
            loss_config={
                **(self.args.loss_settings() if self.args.distill_loss != "ce" else {}),
                "ce_weight": self.args.ce_weight,
                "warmup_epochs": self.args.warmup_epochs,
            },
            training={
                "training seed": self.args.seed,
                "epochs": self.args.num_train_epochs if self.args.max_steps <= 0 else f"{self.args.max_steps} steps",
                "batch size (per device x accumulation x processes)": (
                    f"{self.args.per_device_train_batch_size} x {self.args.gradient_accumulation_steps} x "
                    f"{self.args.world_size}"
                ),
                "optimizer": f"{getattr(self.args.optim, 'value', self.args.optim)} {self.args.optim_args or ''}".strip()
                + f", learning rate {self.args.learning_rate}",
                "weights evaluated": "last epoch" if not self.args.load_best_model_at_end else "best checkpoint",
            },
            results=results,
            plots=plots,
            comparison_table=format_group_table(self.report, self.groups.names) if self.report else None,
            license=license,
        )
        write_model_card(out, card)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, **kwargs):
        """Push ``args.output_dir`` (the canonical folder and its group card; checkpoints stay home)."""
        self._card_results()  # every process: evaluate() is collective when the card needs it
        return super().push_to_hub(commit_message=commit_message, blocking=blocking, **kwargs)
