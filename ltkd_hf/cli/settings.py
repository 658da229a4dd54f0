"""The declared mapping from every setting the recipes accept to the stages it reaches.

A run has up to four training stages, each one `DistillationTrainer` run in its own folder, and ``ltkd-eval``
has an evaluation stage:

* ``teacher``: the biased teacher, plain cross-entropy on the long-tailed split (its own flags: ``--teacher_*``);
* ``student_ce``: the student trained with cross-entropy alone, a comparison row;
* ``student_kd``: the student distilled with plain KD from the same teacher, a comparison row of ``ltkd-distill``
  (a table's KD rows are its ``--losses kd`` cells): the distilled student's schedule, warm-up, groups and teacher
  reach it, its objective (loss, loss settings, CE weight, logit adjustment, label smoothing) does not;
* ``student``: the distilled student (a table has one per cell);
* ``eval``: scoring a saved model (``ltkd-eval``).

Each setting is declared once, with the stages it applies to and whether it changes the trained weights. A program
accepts a flag only when the setting reaches one of its stages (``ltkd-teacher`` has no ``--student``), a setting
that changes weights is recorded in the folders of exactly those stages, and a `DistillationConfig` field the
trainer cannot honour is refused (`ltkd_hf.training_fields.UNSUPPORTED_FIELDS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..training_fields import OUTPUT_FIELDS, UNSUPPORTED_FIELDS, WEIGHT_FIELDS

__all__ = [
    "CONFIG_ONLY", "METRIC_SCHEDULES", "PROGRAM_REFUSED", "PROGRAM_SETTINGS", "PROGRAM_STAGES", "RECIPE_REFUSED",
    "SETTINGS", "STAGES", "Setting", "TEACHER_STAGE_SETTINGS", "applies", "refused_flags", "setting",
]

TEACHER, STUDENT_CE, STUDENT_KD, STUDENT, EVAL = "teacher", "student_ce", "student_kd", "student", "eval"
STAGES = (TEACHER, STUDENT_CE, STUDENT_KD, STUDENT, EVAL)
TRAINED = frozenset({TEACHER, STUDENT_CE, STUDENT_KD, STUDENT})
STUDENTS = frozenset({STUDENT_CE, STUDENT_KD, STUDENT})
DISTILLED = frozenset({STUDENT_KD, STUDENT})  # the stages that distil from the teacher
EVERY = frozenset(STAGES)

PROGRAM_STAGES = {
    "ltkd-distill": TRAINED,
    "ltkd-table": TRAINED - {STUDENT_KD},  # its KD rows are --losses kd cells
    "ltkd-teacher": frozenset({TEACHER}),
    "ltkd-eval": frozenset({EVAL}),
}


@dataclass(frozen=True)
class Setting:
    """Where a setting applies, and whether the weights trained there depend on it; ``reports``: further stages
    whose report (not weights) it shapes."""

    stages: frozenset[str]
    trains: bool
    reports: frozenset[str] = frozenset()

    @property
    def reaches(self) -> frozenset[str]:
        """Every stage it changes something in: its weights or its report."""
        return self.stages | self.reports


def _weights(*stages: str) -> Setting:
    return Setting(frozenset(stages), trains=True)


def _output(stages: frozenset[str] = TRAINED) -> Setting:
    return Setting(stages, trains=False)


_DATA = Setting(EVERY, trains=True)  # what the models are trained on (and, for ltkd-eval, scored on)

SETTINGS: dict[str, Setting] = {
    # DataArguments: the long-tailed split; the test split is scored only
    **dict.fromkeys(
        ("dataset", "imbalance_factor", "lt_seed", "lt_profile", "lt_exponent", "class_order_seed", "train_split",
         "image_column", "label_column", "split_manifest", "manifest_class_names", "validation_per_class"),
        _DATA,
    ),
    "test_split": _output(EVERY),
    "validation_split": _output(),  # held-out data for choosing and reports; ltkd-eval scores the test split alone
    # InputArguments
    "input_size": _weights(*TRAINED),
    # StudentArguments
    "student": _weights(*STUDENTS),
    "student_init": _weights(*STUDENTS),
    "compare_ce_student": _output(frozenset({STUDENT_CE})),
    "compare_kd_student": _output(frozenset({STUDENT_KD})),
    # TeacherArguments: the teacher trained here, and through it the students distilled from it
    **dict.fromkeys(
        ("teacher_architecture", "teacher_init", "teacher_epochs", "teacher_learning_rate", "teacher_logit_adjustment"),
        _weights(TEACHER, *DISTILLED),
    ),
    # GivenTeacherArguments: a finished teacher replaces the teacher stage for the distilled students
    "teacher": _weights(*DISTILLED),
    "teacher_checkpoint": _weights(*DISTILLED),
    "allow_unsafe_pickle": _output(DISTILLED),
    # RunArguments
    "overwrite_output_dir": _output(),
    "verify_images": _output(),
    "dry_run": _output(),
    "in_memory_data": _weights(*TRAINED),
    "in_memory_max_gib": _output(),
    # DistillationConfig (TrainingArguments): the student's objective reaches the distilled student only; the KD
    # student shares its warm-up, its groups (the report's head/medium/tail) and how the teacher runs
    **{name: _weights(*TRAINED) for name in WEIGHT_FIELDS},
    **dict.fromkeys(
        ("distill_loss", "distill_loss_kwargs", "ce_weight", "ce_logit_adjustment", "label_smoothing_factor"),
        _weights(STUDENT),
    ),
    **dict.fromkeys(("warmup_epochs", "teacher_dtype"), _weights(*DISTILLED)),
    # the distilled losses' groups, and every stage's report's head/medium/tail (ltkd-table's tail column)
    "num_groups": Setting(DISTILLED, trains=True, reports=TRAINED - DISTILLED),
    "num_train_epochs": _weights(*STUDENTS),  # the teacher's: --teacher_epochs
    "methods": _weights(*DISTILLED),  # config-only: each loss's distill_loss_kwargs and warmup_epochs (kd: methods.kd)
    **{name: _output() for name in OUTPUT_FIELDS},
    "teacher_cache": _output(DISTILLED),  # the teacher's logits read, not computed: only where it is distilled from
    "push_to_hub": _output(frozenset({TEACHER, STUDENT})),  # ltkd-teacher pushes the teacher, the others the student
    "hub_model_id": _output(frozenset({TEACHER, STUDENT})),
    **{name: _output() for name in UNSUPPORTED_FIELDS},  # accepted by the parser, refused when set
}
# How the teacher is trained here: with a finished --teacher they reach nothing.
TEACHER_STAGE_SETTINGS = frozenset(
    name for name, s in SETTINGS.items() if TEACHER in s.stages and s.trains and not s.stages & {STUDENT_CE, EVAL}
)
# Refused however they are given, as a flag or as a config key: the recipes set device_augmentation through
# --in_memory_data (with the uint8 splits it needs), and alone it would change nothing; load_best_model_at_end would
# select on the test split.
RECIPE_REFUSED = {
    "device_augmentation": "the recipes set it with --in_memory_data true (it needs the in-memory uint8 splits)",
    "load_best_model_at_end": "the recipes evaluate on the test split, so it would choose the checkpoint on the split "
    "the report scores; they keep the last epoch's weights (to choose settings on held-out data: ltkd-table --sweep "
    "... --select_on validation)",
    # Trainer pushes during training only when a stage's push_to_hub is on, and the recipes' stages never push
    "hub_strategy": "the recipes push the finished model once, at the end, without its checkpoints (Trainer's 'end'); "
    "push a checkpoint-N folder yourself with ltkd_hf.hub.push_student if you want one on the Hub",
    "hub_always_push": "it decides when pushes during training may overlap, and the recipes push once, at the end",
}
# Refused values: these schedules move the learning rate by evaluation's metric, and the recipes evaluate on the
# test split, so the weights would be tuned on the images the report scores.
METRIC_SCHEDULES = ("reduce_lr_on_plateau", "greedy")
# Refused as flags only. methods (a mapping per loss) is read from a config only; a config key one program does
# not read is skipped for it (one config serves every program of a setting).
CONFIG_ONLY = {
    "methods": "it is config-only (each loss's settings, under methods: in the --config YAML); on the command line "
    "set the loss's settings with --distill_loss_kwargs and its warm-up with --warmup_epochs",
}
# The settings that only configure --push_to_hub's push (refused without it, and by ltkd-table with it).
PUSH_SETTINGS = ("hub_model_id", "hub_token", "hub_private_repo", "hub_revision")
PROGRAM_REFUSED = {
    "ltkd-table": {"compare_ce_student": "the table's rows are --losses; add or drop ce there",
                   "seed": "each cell trains with its seed from --seeds (--seeds 3 for one run of seed 3)",
                   **dict.fromkeys(("push_to_hub", *PUSH_SETTINGS),
                                   "ltkd-table pushes nothing; push a cell's student folder with "
                                   "ltkd_hf.hub.push_student(folder, repo_id), or train it with ltkd-distill "
                                   "--push_to_hub true")},
}


def refused_flags(program: str) -> dict[str, str]:
    """The flags ``program`` refuses whatever their value, with why; its --help does not offer them."""
    return {**RECIPE_REFUSED, **CONFIG_ONLY, **PROGRAM_REFUSED.get(program, {})}


# The settings of one program's own arguments (their names may also be training settings of the others).
PROGRAM_SETTINGS: dict[str, dict[str, Setting]] = {
    "ltkd-eval": dict.fromkeys(("model", "output_dir", "num_groups", "batch_size", "verify_images"),
                               _output(frozenset({EVAL}))),
    "ltkd-table": {
        **dict.fromkeys(("losses", "seeds", "select_on", "select_metric"), _output()),
        "sweep": _output(frozenset({STUDENT})),  # the distilled cells' settings
        "teacher_losses": _output(frozenset({TEACHER, STUDENT})),  # the teachers the distilled cells distil from
    },
}


def setting(name: str, program: str) -> Setting:
    """The declaration of ``name`` as ``program`` reads it."""
    return PROGRAM_SETTINGS.get(program, {}).get(name) or SETTINGS[name]


def applies(name: str, program: str) -> bool:
    """Whether the setting ``name`` reaches a stage that ``program`` runs."""
    return bool(setting(name, program).reaches & PROGRAM_STAGES[program])
