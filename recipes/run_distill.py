"""Distill a balanced student from a biased teacher with LTKD (or a baseline), the paper's protocol end to end.

    accelerate launch recipes/run_distill.py                                   # the offline digits demo
    accelerate launch recipes/run_distill.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_distill.py --config ... --distill_loss dkd   # command-line flags override the file

Steps: parse -> data (long-tailed split, checks) -> plan every stage -> teacher (the one given, or a
cross-entropy teacher trained on the same split: the biased teacher) -> [cross-entropy student, for comparison]
-> distill -> report, card -> --push_to_hub. Re-running the same command reuses finished stages and resumes an
interrupted one; a folder made with other settings stops the run before any training.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from accelerate import PartialState  # noqa: E402

from ltkd_hf import DistillationConfig  # noqa: E402
from ltkd_hf.evaluation import format_group_table  # noqa: E402
from ltkd_hf.hub import check_push_to_hub_ready  # noqa: E402
from ltkd_hf.models import check_teacher_matches, load_teacher  # noqa: E402
from ltkd_hf.provenance import model_source  # noqa: E402
from recipe_args import (  # noqa: E402
    DataArguments,
    ModelArguments,
    RunArguments,
    default_config,
    parse_with_config,
)
from steps import (  # noqa: E402
    check_data,
    check_output_dir,
    close_processes,
    cross_entropy_args,
    load_long_tailed,
    new_model,
    plan_stage,
    stage_args,
    train_stage,
    use_all_cpu_cores,
)

logger = logging.getLogger("ltkd_hf.recipes")


def given_teacher(model_args: ModelArguments):
    """The teacher named by --teacher (frozen) and how the card names it."""
    try:
        teacher = load_teacher(
            model_args.teacher, checkpoint=model_args.teacher_checkpoint, allow_unsafe_pickle=model_args.allow_unsafe_pickle
        )
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"--teacher {model_args.teacher}: {err}") from err
    name = model_args.teacher
    if model_args.teacher_checkpoint:
        name = f"{model_args.teacher} with the weights of {model_args.teacher_checkpoint}"
    return teacher, name


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, run_args, config = parse_with_config(
        (DataArguments, ModelArguments, RunArguments, DistillationConfig), argv, default_config=default_config
    )
    state = PartialState()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )
    use_all_cpu_cores()

    # Everything that can be wrong with the command fails here, before any training.
    check_output_dir(config.output_dir)
    repo_id = config.hub_model_id or Path(config.output_dir).name
    hub_token = check_push_to_hub_ready(repo_id, config.hub_token) if config.push_to_hub else None
    teacher, teacher_name = given_teacher(model_args) if model_args.teacher else (None, None)
    with config.main_process_first(desc="loading the dataset"):  # one process downloads, the others read the cache
        data = load_long_tailed(data_args)
        check_data(data, dataset=data_args.dataset, verify=run_args.verify_images)
    info, out, model_kwargs = data.split_info, Path(config.output_dir), model_args.model_kwargs()
    if teacher is not None:
        try:
            check_teacher_matches(teacher, num_classes=info.num_classes, label_names=list(info.label_names))
        except ValueError as err:
            raise ValueError(f"--teacher {model_args.teacher}: {err}") from err

    teacher_stage = ce_stage = None
    if teacher is None:
        spec = model_args.teacher_source()
        teacher_model = new_model(spec, data, config.seed, **model_kwargs)
        lr = model_args.teacher_learning_rate or config.learning_rate
        teacher_args = cross_entropy_args(config, "teacher", num_train_epochs=model_args.teacher_epochs, learning_rate=lr)
        teacher_stage = plan_stage("teacher", teacher_args, teacher_model, data, None, run_args)
        how = f"{spec.source} fine-tuned" if spec.pretrained else f"{spec.source}, trained"
        teacher_name = f"{out / 'teacher'} ({how} here with cross-entropy on this split)"
    spec = model_args.student_source()
    if model_args.compare_ce_student:
        ce_model = new_model(spec, data, config.seed, **model_kwargs)
        ce_stage = plan_stage("student_ce", cross_entropy_args(config, "student_ce"), ce_model, data, None, run_args)
    student = new_model(spec, data, config.seed, **model_kwargs)
    architecture = model_source(student)["architecture"]
    if spec.pretrained and architecture != model_args.student:
        logger.warning("The student is a %s from --student_init %s; --student %s is not used.", architecture, spec.source,
                       model_args.student)
    student_args = stage_args(config, "student", hub_model_id=repo_id)
    student_stage = plan_stage("student", student_args, student, data, teacher_name, run_args)

    if teacher_stage is not None:  # the biased teacher: plain cross-entropy on the same long-tailed split
        teacher_trainer = train_stage(teacher_stage, data)
        teacher_trainer.write_report(name="teacher")
        teacher = load_teacher(str(teacher_stage.folder))
    others = {}
    if ce_stage is not None:
        others = train_stage(ce_stage, data).write_report(name="student (CE)")
    trainer = train_stage(student_stage, data, teacher)
    # Evaluation on the balanced test split: last-epoch weights (no best-checkpoint selection).
    reports = trainer.write_report(other_reports=others)
    trainer.create_model_card()
    if config.push_to_hub:
        trainer.push_to_hub(token=hub_token)
        logger.info("Pushed %s to the Hub as %s", student_stage.folder, repo_id)
    if state.is_main_process:
        print(f"\nBalanced test split, top-1 accuracy (%), {data_args.dataset}: {info.describe()}\n")
        print(format_group_table(reports, trainer.groups.names))
        print(f"Student folder, card and report: {student_stage.folder}")
    return reports


if __name__ == "__main__":
    main()
    close_processes()
