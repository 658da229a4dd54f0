"""The flag contract: every flag of every program is declared, and does what the declaration says.

Each flag a program's parser accepts (every inherited `TrainingArguments` field included) must be declared in
`ltkd_hf.cli.settings`: (a) it changes what declared stages train: setting it changes the recorded settings of
exactly those stages, and the stage's arguments carry it; (b) it changes no weights (logging, saving, hub, paths):
listed; (c) `DistillationTrainer` cannot honour it: refused before training, naming it.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
from tqdm import tqdm

from ltkd_hf.cli import distill, evaluate, table, teacher
from ltkd_hf.cli.parsing import parse_args, program_flags
from ltkd_hf.cli.settings import PROGRAM_STAGES, RECIPE_REFUSED, SETTINGS, applies, refused_flags, setting
from ltkd_hf.training_fields import UNSUPPORTED_FIELDS

PROGRAMS = [distill, teacher, table, evaluate]
# The flag each test sets to a value other than the demo config's, when the automatic choice does not fit.
VALUES = {
    "imbalance_factor": "5", "lt_profile": "step", "lt_exponent": "paper", "class_order_seed": "3", "input_size": "28",
    "student": "cifar_resnet8x4", "teacher_architecture": "cifar_wrn_40_1", "distill_loss": "kd",
    "distill_loss_kwargs": "alpha=1", "num_groups": "2", "teacher_dtype": "float32", "lr_scheduler_type": "constant",
    "lr_scheduler_kwargs": '{"power": 2}', "optim": "adamw_torch", "optim_args": "momentum=0.8",
    "adam_beta1": "0.5", "adam_beta2": "0.99",
    "per_device_train_batch_size": "32", "train_sampling_strategy": "sequential", "torch_compile_backend": "aot_eager",
    "torch_compile_mode": "default", "metric_for_best_model": "accuracy", "lr_decay_epochs": "10",
    "max_steps": "50", "warmup_epochs": "2", "in_memory_data": "true", "dataloader_num_workers": "2",
    "validation_per_class": "2",
}
EXTRA = {"bf16": ["--use_cpu", "true"],
         "max_steps": ["--lr_decay_epochs", "none"],
         # the demo's step schedule replaces Trainer's, and its momentum is SGD's: each would be refused
         "lr_scheduler_type": ["--lr_decay_epochs", "none"], "warmup_steps": ["--lr_decay_epochs", "none"],
         "lr_scheduler_kwargs": ["--lr_decay_epochs", "none", "--lr_scheduler_type", "polynomial"],
         "optim": ["--optim_args", ""],
         "dataloader_persistent_workers": ["--dataloader_num_workers", "2"],
         # read only with evaluation during training, and with a metric
         "metric_for_best_model": ["--eval_strategy", "epoch"],
         "greater_is_better": ["--eval_strategy", "epoch", "--metric_for_best_model", "accuracy"],
         **dict.fromkeys(("adam_beta1", "adam_beta2", "adam_epsilon"), ["--optim", "adamw_torch", "--optim_args", ""])}
# Weight settings checked by their own tests instead (they need other data or checkpoints), with the reason.
CHECKED_ELSEWHERE = {
    "dataset": "another dataset: test_recipes_trust (a folder of birds) and test_recipes (the demo)",
    "train_split": "needs a source with other split names: test_recipes.test_split_names_from_the_command_line",
    "image_column": "needs a source with other column names: test_data_sources",
    "label_column": "needs a source with other column names: test_data_sources",
    "student_init": "needs a checkpoint: test_finetune",
    "split_manifest": "needs list files and images: test_cli_manifest",
    "manifest_class_names": "needs --split_manifest text lists: test_data_manifest",
    "teacher_init": "needs a checkpoint: test_finetune",
    "teacher": "replaces the teacher stage: test_cli_runs.test_a_given_teacher_replaces_the_teacher_stage",
    "teacher_checkpoint": "needs --teacher and a state dict: test_models_loading",
    "fp16": "needs a CUDA device (TrainingArguments refuses it on CPU)",
    "tf32": "needs a CUDA device (TrainingArguments refuses it on CPU)",
}
BASE = ["--verify_images", "false"]
CKPT = "local-dir:/ckpt"  # a checkpoint flag's value (parsing reads no file)


def _value(name: str, default):
    if name in VALUES:
        return VALUES[name]
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return str(default * 2 + 1) if isinstance(default, int) else str(default * 2 + 0.5)
    return "1"


def test_every_config_field_is_in_exactly_one_table():
    from ltkd_hf import DistillationConfig
    from ltkd_hf.training_fields import OUTPUT_FIELDS, WEIGHT_FIELDS

    tables = [set(WEIGHT_FIELDS), set(OUTPUT_FIELDS), set(UNSUPPORTED_FIELDS)]
    for name in (f.name for f in dataclasses.fields(DistillationConfig) if f.init):
        assert sum(name in table for table in tables) == 1, name


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda m: m.PROGRAM)
def test_every_flag_of_every_program_is_declared(program):
    flags = program_flags(program.PROGRAM, program.ARGUMENTS) - {"config"}
    undeclared = sorted(f for f in flags if setting_or_none(f, program.PROGRAM) is None)
    assert not undeclared
    # a program offers exactly the declared settings that reach its stages, less the ones it refuses
    assert all(applies(f, program.PROGRAM) for f in flags)
    fields = {f.name for t in program.ARGUMENTS for f in dataclasses.fields(t) if f.init}
    assert flags == {f for f in fields if applies(f, program.PROGRAM)} - refused_flags(program.PROGRAM).keys()


def setting_or_none(name, program):
    try:
        return setting(name, program)
    except KeyError:
        return None


def test_the_teacher_program_offers_only_the_teacher_stage_flags():
    flags = program_flags("ltkd-teacher", teacher.ARGUMENTS)
    assert {"teacher_epochs", "teacher_learning_rate", "teacher_logit_adjustment", "push_to_hub"} <= flags
    assert not flags & {"student", "distill_loss", "teacher", "num_train_epochs", "ce_weight", "ce_logit_adjustment",
                        "warmup_epochs", "label_smoothing_factor", "compare_ce_student"}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    argv = [*BASE, "--output_dir", str(out)]
    _, _, stages, _, _ = distill.plan(argv)
    return argv, stages


WEIGHT_FLAGS = sorted(
    name for name in program_flags("ltkd-distill", distill.ARGUMENTS)
    if name in SETTINGS and SETTINGS[name].trains and name not in CHECKED_ELSEWHERE
)


@pytest.mark.parametrize("name", WEIGHT_FLAGS)
def test_a_weight_flag_changes_the_recorded_settings_of_exactly_its_stages(name, baseline):
    argv, before = baseline
    defaults = {f.name: f for t in distill.ARGUMENTS for f in dataclasses.fields(t)}
    parsed = parse_args("ltkd-distill", distill.ARGUMENTS, argv, default="demo")
    current = {k: v for obj in parsed.values for k, v in vars(obj).items()}
    value = _value(name, current[name] if current[name] is not None else defaults[name].default)
    _, _, stages, _, _ = distill.plan([*argv, *EXTRA.get(name, []), f"--{name}", value])
    changed = {stage for stage, planned in stages.items() if planned.settings != before[stage].settings}
    assert changed == set(SETTINGS[name].stages) & set(stages), (name, value)
    for stage in changed:  # the stage's trainer receives it: its arguments differ (or its model or data, above)
        if hasattr(stages[stage].args, name) and (stage != "teacher" or name != "learning_rate"):
            assert getattr(stages[stage].args, name) != getattr(before[stage].args, name), (name, stage)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_FIELDS))
def test_an_unsupported_training_argument_is_refused_when_set(name):
    field = next(f for f in dataclasses.fields(distill.ARGUMENTS[-1]) if f.name == name)
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    value = VALUES.get(name) or {"label_names": "targets", "include_for_metrics": "inputs",
                                 "include_num_input_tokens_seen": "true", "length_column_name": "len",
                                 "liger_kernel_config": '{"rope": true}', "optim_target_modules": "conv",
                                 "gradient_checkpointing_kwargs": '{"use_reentrant": false}',
                                 "activation_checkpointing_kwargs": '{"use_reentrant": false}',
                                 "parallelism_config": '{"tp_size": 2}', "neftune_noise_alpha": "5"}.get(name)
    value = value or (str(not default).lower() if isinstance(default, bool) else "1")
    alias = name.replace("activation_", "(activation|gradient)_")  # transformers 5 maps the old name to the new
    if name in ("liger_kernel_config", "parallelism_config"):  # not settable from a command line at all
        with pytest.raises(SystemExit):
            parse_args("ltkd-distill", distill.ARGUMENTS, [*BASE, f"--{name}", value])
        return
    with pytest.raises(ValueError, match=rf"--{alias} .*is not supported by DistillationTrainer"):
        parse_args("ltkd-distill", distill.ARGUMENTS, [*BASE, f"--{name}", value])


def test_an_unsupported_setting_in_a_config_is_refused(tmp_path):
    path = tmp_path / "liger.yaml"
    path.write_text("use_liger_kernel: true\nliger_kernel_config: {rope: true}\n")
    with pytest.raises(ValueError, match=r"--use_liger_kernel True is not supported by DistillationTrainer"):
        parse_args("ltkd-distill", distill.ARGUMENTS, ["--config", str(path)])


@pytest.mark.parametrize("line,match", [
    # each was a traceback (TypeError, AttributeError), or reached the trainer to fail after the teacher's folder
    ("seed: 1.5", r"seed: 1\.5 is not an integer, as --seed takes"),
    ("imbalance_factor: [20]", r"imbalance_factor: \[20\] is not a number"),
    ("student: null", r"student: None is not a value \(this setting cannot be unset\)"),
    ("per_device_train_batch_size: 64.5", r"per_device_train_batch_size: 64\.5 is not an integer"),
    ("num_train_epochs: true", r"num_train_epochs: True is not a number"),
    ("num_train_epochs: three", r"num_train_epochs: 'three' is not a number"),
    ("bf16: maybe", r"bf16: 'maybe' is not true or false"),
    ("lr_scheduler_type: cosin", r"lr_scheduler_type: 'cosin' is not one of \['linear'"),
])
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, line, match):
    config = tmp_path / "wrong.yaml"
    config.write_text(f"defaults: demo\n{line}\n")
    with pytest.raises(ValueError, match=rf"^--config {config}: {match}.*; fix the file\.$"):
        parse_args("ltkd-distill", distill.ARGUMENTS, ["--config", str(config)])


def test_config_values_are_converted_as_the_flags_convert_them(tmp_path):
    config = tmp_path / "right.yaml"
    config.write_text("defaults: demo\nlr_decay_epochs: 20\nseed: '3'\nbf16: false\nnum_train_epochs: 40\n"
                      "teacher_learning_rate: null\n")
    parsed = parse_args("ltkd-distill", distill.ARGUMENTS, ["--config", str(config)])
    args = parsed.values[-1]
    assert args.lr_decay_epochs == [20.0] and args.seed == 3 and args.bf16 is False  # one value: a list of it
    assert args.num_train_epochs == 40.0 and isinstance(args.num_train_epochs, float)
    assert parsed.values[2].teacher_learning_rate is None
    config.write_text("defaults: demo\nlr_decay_epochs: none\nteacher_learning_rate: None\n")  # as --name none
    parsed = parse_args("ltkd-distill", distill.ARGUMENTS, ["--config", str(config)])
    assert parsed.values[-1].lr_decay_epochs is None and parsed.values[2].teacher_learning_rate is None


def test_a_flag_of_several_values_given_twice_is_refused():
    """argparse keeps a flag's last value: a second --sweep silently replaced the first, and its rows vanished from
    the table. A one-value flag given again stays the usual override of an earlier value."""
    with pytest.raises(ValueError, match=r"^--sweep: given twice, and only the last would count; give all its values "
                                         r"after one --sweep \(e.g. --sweep alpha=1,6 beta=1,6\)\.$"):
        parse_args("ltkd-table", table.ARGUMENTS, ["--losses", "ltkd", "--sweep", "alpha=1,2", "--sweep", "beta=1"])
    with pytest.raises(ValueError, match=r"^--seeds: given twice"):
        parse_args("ltkd-table", table.ARGUMENTS, ["--seeds", "0", "--seeds=1"])
    parsed = parse_args("ltkd-distill", distill.ARGUMENTS, ["--num_train_epochs", "30", "--num_train_epochs", "40"])
    assert parsed.values[-1].num_train_epochs == 40


def test_a_dashed_flag_is_the_same_flag():
    """HfArgumentParser offers --teacher-epochs for --teacher_epochs (and --no-verify-images sets verify_images):
    the checks of what the command line set missed the dashed spelling, and --lr-decay-epochs none was no unset."""
    parsed = parse_args("ltkd-distill", distill.ARGUMENTS,
                        ["--teacher-epochs", "3", "--no-verify-images", "--lr-decay-epochs", "none", "--num_groups=2"])
    assert parsed.given == {"teacher_epochs", "verify_images", "lr_decay_epochs", "num_groups"}
    config = next(v for v in parsed.values if hasattr(v, "lr_decay_epochs"))
    assert config.lr_decay_epochs is None
    with pytest.raises(ValueError, match=r"^--sweep: given twice"):
        parse_args("ltkd-table", table.ARGUMENTS, ["--losses", "ltkd", "--sweep", "alpha=1,2", "--sweep=beta=1"])


@pytest.mark.parametrize(
    ("program", "name", "flags"),
    [(distill, "student", ["--student", "cifar_wrn_40_1", "--student_init", CKPT]),
     (table, "student", ["--student-init", CKPT, "--student", "cifar_resnet8x4"]),
     (distill, "teacher_architecture", ["--teacher_architecture", "cifar_wrn_40_1", "--teacher_init", CKPT]),
     (table, "teacher_architecture", ["--teacher_architecture", "cifar_wrn_40_1", "--teacher_init", CKPT]),
     (teacher, "teacher_architecture", ["--teacher-architecture", "cifar_wrn_40_1", "--teacher-init", CKPT])],
    ids=lambda v: getattr(v, "PROGRAM", None) or (" ".join(v[::2]) if isinstance(v, list) else v),
)
def test_an_architecture_flag_with_a_checkpoint_is_refused(program, name, flags):
    """The checkpoint decides the architecture: ltkd-table and every --teacher_init trained the checkpoint's and
    dropped --student / --teacher_architecture without a word (ltkd-distill refused --student only once the data
    was read and the model built)."""
    init = {"student": "student_init", "teacher_architecture": "teacher_init"}[name]
    with pytest.raises(ValueError, match=rf"^--{name}: --{init} local-dir:/ckpt replaces it \(the checkpoint decides "
                                         r"the architecture\), so it would change nothing; drop one of them\.$"):
        parse_args(program.PROGRAM, program.ARGUMENTS, flags)


def test_the_table_refuses_seed_for_seeds():
    """ltkd-table --seed 3 was accepted and every cell still trained with --seeds' 0."""
    with pytest.raises(ValueError, match=r"^--seed: not a flag of ltkd-table: each cell trains with its seed from "
                                         r"--seeds \(--seeds 3 for one run of seed 3\)\.$"):
        parse_args("ltkd-table", table.ARGUMENTS, ["--losses", "kd", "--seed", "3"])


def test_epochs_given_with_max_steps_are_refused():
    """--max_steps overrides the epochs (Trainer's rule): --teacher_epochs 3 --max_steps 2 recorded 3 epochs for a
    teacher trained 2 steps, and changing the ignored value later made the folder stale."""
    for flag in ("--num_train_epochs", "--teacher_epochs"):
        with pytest.raises(ValueError, match=rf"^{flag}: --max_steps 2 sets the length of every stage \(Trainer's "
                                             r"max_steps overrides the epochs\), so it would change nothing"):
            parse_args("ltkd-distill", distill.ARGUMENTS, ["--max_steps", "2", flag, "3"])
    parse_args("ltkd-distill", distill.ARGUMENTS, ["--max_steps", "2"])  # the config's epochs: overridden (documented)


def test_the_recipes_refuse_device_augmentation_alone(tmp_path):
    with pytest.raises(ValueError, match=r"--device_augmentation: not a flag of ltkd-distill: .*--in_memory_data true"):
        parse_args("ltkd-distill", distill.ARGUMENTS, ["--device_augmentation", "true"])
    # In a config too: the folders would record device_augmentation = true for a run that never used it.
    config = tmp_path / "augment.yaml"
    config.write_text("defaults: none\ndataset: builtin:digits\ndevice_augmentation: true\n")
    with pytest.raises(ValueError, match=rf"--config {config}: device_augmentation: not a setting of the recipes: "
                                         r".*--in_memory_data true"):
        parse_args("ltkd-distill", distill.ARGUMENTS, ["--config", str(config)])
    assert set(RECIPE_REFUSED) <= set(SETTINGS)


def test_the_recipes_refuse_the_hub_flags_of_pushes_during_training():
    """--hub_strategy all_checkpoints was accepted and did nothing: the recipes' stages never push while training,
    and the final push leaves the checkpoints home."""
    for program, arguments in (("ltkd-distill", distill.ARGUMENTS), ("ltkd-teacher", teacher.ARGUMENTS)):
        with pytest.raises(ValueError, match=rf"--hub_strategy: not a flag of {program}: the recipes push the "
                                             r"finished model once, at the end, without its checkpoints"):
            parse_args(program, arguments, ["--hub_strategy", "all_checkpoints"])
        with pytest.raises(ValueError, match=rf"--hub_always_push: not a flag of {program}: it decides when pushes"):
            parse_args(program, arguments, ["--hub_always_push", "true"])


@pytest.mark.parametrize("program", [distill, teacher])
@pytest.mark.parametrize("flags, shown", [(["--hub_model_id", "alice/x"], "--hub_model_id alice/x"),
                                          (["--hub_private_repo", "true"], "--hub_private_repo true"),
                                          (["--hub_revision", "seed-1"], "--hub_revision seed-1"),
                                          (["--hub_token", "hf_secret"], "--hub_token")])
def test_a_setting_of_the_push_without_the_push_is_refused_before_training(tmp_path, program, flags, shown):
    """They were accepted and did nothing, and --hub_model_id titled the card after a repo nothing went to."""
    with pytest.raises(ValueError, match=rf"^{shown}: a setting of the push, and --push_to_hub is off") as err:
        program.plan([*flags, "--output_dir", str(tmp_path / "run")])
    assert "hf_secret" not in str(err.value) and not (tmp_path / "run").exists()


def test_the_table_refuses_the_push_flags_it_ignored():
    for flags in (["--push_to_hub", "true"], ["--hub_model_id", "alice/x"], ["--hub_token", "hf_x"]):
        with pytest.raises(ValueError, match=rf"{flags[0]}: not a flag of ltkd-table: ltkd-table pushes nothing; "
                                             r"push a cell's student folder with ltkd_hf.hub.push_student"):
            parse_args("ltkd-table", table.ARGUMENTS, flags)


def test_the_recipes_refuse_to_choose_a_checkpoint_on_the_test_split():
    with pytest.raises(ValueError, match=r"--load_best_model_at_end: not a flag of ltkd-distill: the recipes evaluate "
                                         r"on the test split, so it would choose the checkpoint on the split the report"):
        parse_args("ltkd-distill", distill.ARGUMENTS, ["--load_best_model_at_end", "true", "--eval_strategy", "epoch",
                                                        "--save_strategy", "epoch"])


@pytest.mark.parametrize(("flags", "message"), [
    (["--logging_strategy", "epoch", "--logging_steps", "5"], r"^--logging_steps 5 is the interval of "
                                                              r"--logging_strategy steps, and --logging_strategy is "
                                                              r"'epoch', so it would change nothing"),
    (["--save_total_limit", "3"], r"^--save_total_limit 3 limits the checkpoints --save_strategy saves, and "
                                  r"--save_strategy is 'no' \(none\)"),
])
def test_a_flag_the_strategy_in_force_never_reads_is_refused(flags, message):
    """Taken without effect. The demo config saves nothing, and the configs set logging_steps themselves: their
    values stand when only the strategy is changed."""
    with pytest.raises(ValueError, match=message):
        parse_args("ltkd-distill", distill.ARGUMENTS, [*BASE, *flags], default="demo")
    config = parse_args("ltkd-distill", distill.ARGUMENTS, [*BASE, "--logging_strategy", "epoch"],
                        default="demo").values[-1]
    assert config.logging_steps == 10 and config.logging_strategy == "epoch"


def test_a_best_metric_the_evaluation_does_not_report_is_refused_before_any_stage_trains(tmp_path):
    """Trainer looks it up only at a stage's first evaluation: the teacher trained, and then it stopped."""
    with pytest.raises(ValueError, match=r"^--metric_for_best_model accuracy_few: the evaluation reports \['loss', "
                                         r"'ce', 'accuracy', 'accuracy_head', 'accuracy_medium', 'accuracy_tail'\]"):
        distill.plan([*BASE, "--output_dir", str(tmp_path / "run"), "--eval_strategy", "epoch",
                      "--metric_for_best_model", "accuracy_few"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("schedule", ["reduce_lr_on_plateau", "greedy"])
@pytest.mark.parametrize("program", [distill, teacher, table], ids=lambda p: p.PROGRAM)
def test_the_recipes_refuse_a_learning_rate_moved_by_the_test_split(tmp_path, program, schedule):
    """transformers steps these schedules on the evaluation loss, which the recipes compute on the test split: the
    teacher trained with its learning rate lowered by test-split plateaus, and the report called that split held
    out. As a flag or as a config key."""
    message = rf"--lr_scheduler_type {schedule}: it moves the learning rate by evaluation's metric, and the recipes "
    flags = ["--lr_decay_epochs", "none", "--eval_strategy", "epoch"]
    with pytest.raises(ValueError, match=message):
        parse_args(program.PROGRAM, program.ARGUMENTS, [*flags, "--lr_scheduler_type", schedule])
    config = tmp_path / "plateau.yaml"
    config.write_text(f"lr_scheduler_type: {schedule}\nlr_decay_epochs: null\neval_strategy: epoch\n")
    with pytest.raises(ValueError, match=message):
        parse_args(program.PROGRAM, program.ARGUMENTS, ["--config", str(config)])


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.PROGRAM)
def test_no_help_offers_a_flag_its_program_refuses_whatever_the_value(program, capsys):
    with pytest.raises(SystemExit):
        parse_args(program.PROGRAM, program.ARGUMENTS, ["--help"])
    shown = capsys.readouterr().out
    refused = refused_flags(program.PROGRAM)
    assert {"device_augmentation", "methods"} <= refused.keys()
    assert not [name for name in refused if f"--{name} " in shown or f"--{name}\n" in shown]
    # nor one DistillationTrainer cannot honour (--gradient_checkpointing was listed, then refused when set)
    assert not [name for name in UNSUPPORTED_FIELDS if f"--{name} " in shown or f"--{name}\n" in shown]
    assert "--output_dir" in shown  # the help itself was read


def test_every_program_has_a_stage_and_output_settings_change_no_recorded_setting(baseline):
    assert set(PROGRAM_STAGES) == {p.PROGRAM for p in PROGRAMS}
    argv, stages = baseline
    before = {stage: planned.settings for stage, planned in stages.items()}
    for name, value in (("logging_steps", "3"), ("save_strategy", "epoch"), ("per_device_eval_batch_size", "7"),
                        ("eval_strategy", "epoch"), ("report_to", "none"), ("disable_tqdm", "true")):
        assert not SETTINGS[name].trains
        _, _, stages, _, _ = distill.plan([*argv, f"--{name}", value])
        assert {stage: planned.settings for stage, planned in stages.items()} == before, name


def test_ctrl_c_says_how_to_resume_on_one_line(capsys, monkeypatch):
    """Ctrl-C printed a 40-line KeyboardInterrupt traceback and did not say that re-running resumes."""
    from ltkd_hf.cli.parsing import run_program

    def interrupted(argv):
        tqdm(total=5, file=sys.stderr).update(2)  # a progress bar, cut short
        raise KeyboardInterrupt

    monkeypatch.delenv("LTKD_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_program("ltkd-distill", interrupted, [])
    err = capsys.readouterr().err
    bar, message, end = err.split("\n")  # a terminal's lines (splitlines would split the bar at its "\r" too)
    assert exit_.value.code == 130 and end == ""
    assert "2/5" in bar and "interrupted." not in bar and "2/5" not in message  # its own line, not the bar's
    assert "interrupted. Finished stages and saved checkpoints are kept: the same command reuses them and resumes" in err


@pytest.mark.parametrize("program,argv,message", [
    (table, ["--seeds", "0", "1.5"], "argument --seeds: invalid int value: '1.5'; see --help."),
    (distill, ["--learning_rate", "fast"],
     "argument --learning_rate/--learning-rate: invalid float value: 'fast'; see --help."),
    (distill, ["--distill_loss"], "argument --distill_loss/--distill-loss: expected one argument; see --help."),
])
def test_a_value_argparse_cannot_read_is_one_line(capsys, program, argv, message):
    """argparse printed the whole usage, over a hundred lines, above its error."""
    with pytest.raises(SystemExit) as exit_:
        program.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.endswith(f": error: {message}\n")
