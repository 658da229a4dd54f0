"""``ltkd-distill``: distill a balanced student from a biased teacher, the paper's protocol end to end.

    accelerate launch recipes/run_distill.py                  # the offline digits demo (or: ltkd-distill)
    accelerate launch recipes/run_distill.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_distill.py --config ... --distill_loss dkd   # flags override the config

Steps: parse -> data (long-tailed split, checks) -> plan every stage -> teacher (the one given, or a
cross-entropy teacher trained on the same split: the biased teacher) -> [cross-entropy student, KD student, for
comparison] -> distill -> report, card -> --push_to_hub. Re-running the same command reuses finished stages and
resumes an interrupted one; a folder made with other settings stops the run before any training.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from ..config import DistillationConfig
from ..evaluation import describe_test_split
from ..models import check_teacher_matches
from .arguments import DataArguments, GivenTeacherArguments, InputArguments, RunArguments, StudentArguments, TeacherArguments
from .parsing import default_config, method_errors, method_settings, parse_args, run_program
from .recorded import check_teacher_data
from .stages import (
    check_given_teacher,
    check_output_dir,
    check_push,
    cross_entropy_args,
    given_teacher,
    load_long_tailed,
    new_model,
    plan_stage,
    plan_teacher,
    print_plan,
    print_results,
    refuse_stale,
    setup_logging,
    stage_args,
    train_stage,
    train_teacher,
    use_all_cpu_cores,
)

PROGRAM = "ltkd-distill"
ARGUMENTS = (DataArguments, StudentArguments, TeacherArguments, GivenTeacherArguments, InputArguments, RunArguments,
             DistillationConfig)
logger = logging.getLogger("ltkd_hf.cli")


def plan(argv: list[str] | None = None):
    """Parse the command and plan every stage (nothing trains): ``(arguments, data, stages, teacher)``."""
    parsed = parse_args(PROGRAM, ARGUMENTS, argv, default=default_config)
    data_args, student_args, teacher_args, given_args, input_args, run_args, config = parsed.values
    if given_args.teacher is not None:
        check_given_teacher(parsed.given, given_args.teacher)
    setup_logging()
    use_all_cpu_cores()
    repo_id = config.hub_model_id or Path(config.output_dir).name
    hub_token = check_push(config, repo_id)
    check_output_dir(config.output_dir)
    teacher, teacher_name = given_teacher(given_args) if given_args.teacher else (None, None)
    with config.main_process_first(desc="loading the dataset"):  # one process downloads, the others read the cache
        data = load_long_tailed(data_args, verify=run_args.verify_images)
    info, kwargs = data.split_info, input_args.model_kwargs()
    if teacher is not None:
        try:
            check_teacher_matches(teacher, num_classes=info.num_classes, label_names=list(info.label_names))
        except ValueError as err:
            raise ValueError(f"--teacher {given_args.teacher}: {err}") from err
        check_teacher_data(given_args.teacher, info)

    stages = {}
    if teacher is None:
        stages["teacher"] = plan_teacher(config, teacher_args, data, run_args, **kwargs)
        teacher_name = stages["teacher"].description
    spec = student_args.student_source()
    if student_args.compare_ce_student and config.distill_loss == "ce":
        logger.info("--compare_ce_student: the student is the CE student (--distill_loss ce)")
    elif student_args.compare_ce_student:
        model = new_model(spec, data, config.seed, **kwargs)
        stages["student_ce"] = plan_stage("student_ce", cross_entropy_args(config, "student_ce"), model, data, None, run_args)
    student = new_model(spec, data, config.seed, **kwargs)
    # the loss's own settings and warm-up: the config's methods[loss], then the command line's
    with method_errors(parsed, config.distill_loss):
        distill_args = stage_args(config, "student", hub_model_id=repo_id,
                                  **method_settings(parsed, config, config.distill_loss))
        stages["student"] = plan_stage("student", distill_args, student, data, teacher_name, run_args, product=True)
    if student_args.compare_kd_student and config.distill_loss == "kd":
        logger.info("--compare_kd_student: the distilled student is the KD student (--distill_loss kd)")
    elif student_args.compare_kd_student:  # planned after the distilled student (its refusals first), trained before
        model = new_model(spec, data, config.seed, **kwargs)
        with method_errors(parsed, "kd"):
            kd = plan_stage("student_kd", kd_args(parsed, config), model, data, teacher_name, run_args)
        stages = {**{name: stage for name, stage in stages.items() if name != "student"}, "student_kd": kd,
                  "student": stages["student"]}
    if "warmup_epochs" in parsed.given and config.distill_loss == "ce" and "student_kd" not in stages:
        raise ValueError(
            f"--warmup_epochs {config.warmup_epochs:g}: ramps up a distillation term, and --distill_loss ce without "
            "the KD comparison student (--compare_kd_student false) distils no student, so it would change nothing; "
            "drop it, or choose a distillation loss."
        )
    refuse_stale(stages.values())
    return parsed, data, stages, teacher, hub_token


def kd_args(parsed, config: DistillationConfig) -> DistillationConfig:
    """Arguments of the KD comparison student: plain KD (the config's ``methods.kd``, else KD's defaults) from the
    same teacher, with the distilled student's schedule, warm-up (a command line's --warmup_epochs, else
    ``methods.kd``'s) and groups: the baseline LTKD is compared with. None of the distilled student's own objective
    (its loss settings, CE weight, logit adjustment, label smoothing) reaches it."""
    objective = dict(distill_loss="kd", ce_weight=1.0, ce_logit_adjustment=0.0, label_smoothing_factor=0.0)
    return stage_args(config, "student_kd", **objective, **method_settings(parsed, config, "kd"))


def main(argv: list[str] | None = None) -> dict:
    """Run ``ltkd-distill`` with ``argv`` (default: the command line); return the report rows."""
    parsed, data, stages, teacher, hub_token = plan(argv)
    data_args, *_, run_args, config = parsed.values
    if run_args.dry_run:
        print_plan(stages.values())
        return {}
    if "teacher" in stages:  # the biased teacher: plain cross-entropy on the same long-tailed split
        teacher, _, _, _ = train_teacher(stages["teacher"], data)
    # Each stage's report on the test split (last-epoch weights, no best-checkpoint selection); a finished stage's
    # own report.json is reused when it scored the same weights and rows.
    others = {}
    if "student_ce" in stages:
        stage = stages["student_ce"]
        others = train_stage(stage, data).write_report(name="student (CE)", reuse=stage.finished)
    if "student_kd" in stages:
        stage = stages["student_kd"]
        kd = train_stage(stage, data, teacher)
        # its own row (the teacher's comes again below)
        others[kd.model_label] = kd.write_report(reuse=stage.finished)[kd.model_label]
    trainer = train_stage(stages["student"], data, teacher)
    reports = trainer.write_report(other_reports=others, reuse=stages["student"].finished)
    trainer.create_model_card()
    if config.push_to_hub:
        trainer.push_to_hub(token=hub_token)
        logger.info("Pushed %s to the Hub as %s", stages["student"].folder, trainer.hub_model_id)
    if PartialState().is_main_process:
        test = describe_test_split(reports[trainer.model_label]["test_counts"])
        print(f"\nTest split ({test}), top-1 accuracy (%), {data_args.dataset}: {data.split_info.describe()}\n")
        print_results(reports, trainer.groups.names, data.caveats)
        print(f"Student folder, card and report: {stages['student'].folder}")
    return reports


def cli() -> None:
    """The ``ltkd-distill`` console command."""
    run_program(PROGRAM, main)


if __name__ == "__main__":
    cli()
