"""The declared mapping from every setting the recipes accept to the stages it reaches.

A run has up to three training stages, each one `DistillationTrainer` run in its own folder, and ``ltkd-eval``
has an evaluation stage:

* ``teacher``: the biased teacher, plain cross-entropy on the long-tailed split (its own flags: ``--teacher_*``);
* ``student_ce``: the student trained with cross-entropy alone, the comparison row;
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

__all__ = ["PROGRAM_SETTINGS", "PROGRAM_STAGES", "RECIPE_REFUSED", "SETTINGS", "STAGES", "Setting", "applies", "setting"]

TEACHER, STUDENT_CE, STUDENT, EVAL = "teacher", "student_ce", "student", "eval"
STAGES = (TEACHER, STUDENT_CE, STUDENT, EVAL)
TRAINED = frozenset({TEACHER, STUDENT_CE, STUDENT})
STUDENTS = frozenset({STUDENT_CE, STUDENT})
EVERY = frozenset(STAGES)

PROGRAM_STAGES = {
    "ltkd-distill": TRAINED,
    "ltkd-table": TRAINED,
    "ltkd-teacher": frozenset({TEACHER}),
    "ltkd-eval": frozenset({EVAL}),
}


@dataclass(frozen=True)
class Setting:
    """Where a setting applies, and whether the weights trained there depend on it."""

    stages: frozenset[str]
    trains: bool


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
    "validation_split": _output(EVERY),
    # InputArguments
    "input_size": _weights(TEACHER, STUDENT_CE, STUDENT),
    # StudentArguments
    "student": _weights(STUDENT_CE, STUDENT),
    "student_init": _weights(STUDENT_CE, STUDENT),
    "compare_ce_student": _output(frozenset({STUDENT_CE})),
    # TeacherArguments: the teacher trained here, and through it the student distilled from it
    **dict.fromkeys(
        ("teacher_architecture", "teacher_init", "teacher_epochs", "teacher_learning_rate", "teacher_logit_adjustment"),
        _weights(TEACHER, STUDENT),
    ),
    # GivenTeacherArguments: a finished teacher replaces the teacher stage for the distilled student
    "teacher": _weights(STUDENT),
    "teacher_checkpoint": _weights(STUDENT),
    "allow_unsafe_pickle": _output(frozenset({STUDENT})),
    # RunArguments
    "overwrite_output_dir": _output(),
    "verify_images": _output(),
    "dry_run": _output(),
    "in_memory_data": _weights(TEACHER, STUDENT_CE, STUDENT),
    "in_memory_max_gib": _output(),
    # DistillationConfig (TrainingArguments): the student's objective reaches the distilled student only
    **{name: _weights(TEACHER, STUDENT_CE, STUDENT) for name in WEIGHT_FIELDS},
    **dict.fromkeys(
        ("distill_loss", "distill_loss_kwargs", "ce_weight", "ce_logit_adjustment", "label_smoothing_factor",
         "num_groups", "warmup_epochs", "teacher_dtype"),
        _weights(STUDENT),
    ),
    "num_train_epochs": _weights(STUDENT_CE, STUDENT),  # the teacher's: --teacher_epochs
    "methods": _weights(STUDENT),  # config-only: each loss's distill_loss_kwargs and warmup_epochs
    **{name: _output() for name in OUTPUT_FIELDS},
    "push_to_hub": _output(frozenset({TEACHER, STUDENT})),  # ltkd-teacher pushes the teacher, the others the student
    "hub_model_id": _output(frozenset({TEACHER, STUDENT})),
    **{name: _output() for name in UNSUPPORTED_FIELDS},  # accepted by the parser, refused when set
}
# The recipes set device_augmentation through --in_memory_data (with the uint8 splits it needs); alone, the flag
# would change nothing, so the recipes refuse it. methods (a mapping per loss) is read from a config only.
RECIPE_REFUSED = {
    "device_augmentation": "the recipes set it with --in_memory_data true (it needs the in-memory uint8 splits)",
    "methods": "it is config-only (each loss's settings, under methods: in the --config YAML); on the command line "
    "set the loss's settings with --distill_loss_kwargs and its warm-up with --warmup_epochs",
}


# The settings of one program's own arguments (their names may also be training settings of the others).
PROGRAM_SETTINGS: dict[str, dict[str, Setting]] = {
    "ltkd-eval": dict.fromkeys(("model", "output_dir", "num_groups", "batch_size"), _output(frozenset({EVAL}))),
    "ltkd-table": dict.fromkeys(("losses", "seeds", "sweep", "teacher_losses"), _output()),
}


def setting(name: str, program: str) -> Setting:
    """The declaration of ``name`` as ``program`` reads it."""
    return PROGRAM_SETTINGS.get(program, {}).get(name) or SETTINGS[name]


def applies(name: str, program: str) -> bool:
    """Whether the setting ``name`` reaches a stage that ``program`` runs."""
    return bool(setting(name, program).stages & PROGRAM_STAGES[program])
