"""Distill a balanced student from a biased teacher with LTKD (or a baseline), the paper's protocol end to end.

    accelerate launch recipes/run_distill.py                                   # the offline digits demo
    accelerate launch recipes/run_distill.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_distill.py --config ... --distill_loss dkd   # command-line flags override the file

Steps: load the data -> long-tailed split -> groups -> teacher (the one given, or a cross-entropy teacher
trained on the same split: the biased teacher) -> [cross-entropy student, for comparison] -> distill ->
evaluate on the balanced test split -> student folder, report, plots, model card -> --push_to_hub.
Re-running the same command resumes from the last checkpoint of each stage.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from accelerate import PartialState  # noqa: E402

from ltkd_hf import ClassGroups, DistillationConfig  # noqa: E402
from ltkd_hf.evaluation import format_group_table, group_mass, write_report  # noqa: E402
from ltkd_hf.hub import check_push_to_hub_ready, load_student, push_student, render_model_card, write_model_card  # noqa: E402
from ltkd_hf.models import create_student, load_teacher  # noqa: E402
from recipe_args import DEMO_CONFIG, DataArguments, ModelArguments, parse_with_config  # noqa: E402
from steps import (  # noqa: E402
    close_processes,
    cross_entropy_args,
    load_long_tailed,
    save_model_folder,
    score,
    stage_args,
    train_stage,
)

logger = logging.getLogger("ltkd_hf.recipes")


def check_output_dir(path: str) -> None:
    """Fail before any training when the output folder cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):  # one per process: no race
            pass
    except OSError as err:
        raise ValueError(
            f"--output_dir {path!r} cannot be written ({err.strerror}); pass a folder you can write to."
        ) from err


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, config = parse_with_config(
        (DataArguments, ModelArguments, DistillationConfig), argv, default_config=DEMO_CONFIG
    )
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if PartialState().is_main_process else logging.WARNING,
    )

    # Everything that can be wrong with the command fails here, before any training.
    check_output_dir(config.output_dir)
    repo_id = config.hub_model_id or Path(config.output_dir).name
    hub_token = check_push_to_hub_ready(repo_id, config.hub_token) if config.push_to_hub else None
    teacher = None
    if model_args.teacher is not None:
        teacher = load_teacher(
            model_args.teacher,
            checkpoint=model_args.teacher_checkpoint,
            allow_unsafe_pickle=model_args.allow_unsafe_pickle,
        )
    with config.main_process_first(desc="loading the dataset"):  # one process downloads, the others read the cache
        data = load_long_tailed(data_args)
    groups = ClassGroups.from_counts(data.class_counts, config.num_groups)
    num_classes, out = len(data.class_counts), Path(config.output_dir)
    provenance = {"ltkd": {**data.description, "groups": groups.to_dict(), "class_counts": data.class_counts}}
    model_kwargs = model_args.model_kwargs()

    if teacher is None:  # the biased teacher: plain cross-entropy on the same long-tailed split
        teacher_dir = out / "teacher"
        if not (teacher_dir / "model.safetensors").is_file():
            model = create_student(
                model_args.teacher_architecture, num_classes=num_classes, label_names=data.label_names, **model_kwargs
            )
            lr = model_args.teacher_learning_rate or config.learning_rate
            train_stage(
                model,
                cross_entropy_args(config, "teacher", num_train_epochs=model_args.teacher_epochs, learning_rate=lr),
                data,
            )
            save_model_folder(model, teacher_dir, data.label_names, provenance)
        teacher = load_teacher(str(teacher_dir))
    teacher_name = model_args.teacher or f"{model_args.teacher_architecture} (cross-entropy on the same split)"

    results = {}
    if model_args.compare_ce_student:
        ce_dir = out / "student_ce"
        if not (ce_dir / "model.safetensors").is_file():
            ce_student = create_student(
                model_args.student, num_classes=num_classes, label_names=data.label_names, **model_kwargs
            )
            train_stage(ce_student, cross_entropy_args(config, "student_ce"), data)
            save_model_folder(ce_student, ce_dir, data.label_names, provenance)
        results["student (CE)"] = load_student(str(ce_dir))

    student = create_student(model_args.student, num_classes=num_classes, label_names=data.label_names, **model_kwargs)
    trainer = train_stage(student, stage_args(config, "student"), data, teacher)
    test, to_teacher = trainer.eval_dataset, trainer.teacher_input_transform
    loss_label = f"student ({config.distill_loss.upper()})"
    results[loss_label] = student

    # Evaluation on the balanced test split: last-epoch weights (no best-checkpoint selection).
    batch = config.per_device_eval_batch_size
    reports, teacher_probs = {}, None
    reports["teacher"], teacher_probs = score(teacher, test, data.class_counts, config.num_groups, batch, to_teacher)
    for name, model in results.items():
        reports[name], _ = score(model, test, data.class_counts, config.num_groups, batch)
    student_dir = out / "student"
    save_model_folder(
        student,
        student_dir,
        data.label_names,
        {"ltkd": {**provenance["ltkd"], "distill_loss": trainer.loss_fn.describe()}},
    )
    if PartialState().is_main_process:
        mass = group_mass(teacher_probs, groups)
        metadata = {
            **data.description,
            "teacher": teacher_name,
            "student": model_args.student,
            "distill_loss": trainer.loss_fn.describe(),
            "seed": config.seed,
            "evaluated": "last-epoch weights",
            "epochs": config.num_train_epochs,
        }
        paths = write_report(
            student_dir,
            reports,
            class_counts=data.class_counts,
            groups=groups,
            teacher_group_mass=mass,
            metadata=metadata,
        )
        table = format_group_table(reports, groups.names)
        card = render_model_card(
            model_name=repo_id,
            architecture=model_args.student,
            teacher=teacher_name,
            dataset=data_args.dataset,
            imbalance_factor=data_args.imbalance_factor,
            num_groups=config.num_groups,
            group_names=list(groups.names),
            loss_name=config.distill_loss,
            loss_config={
                "description": trainer.loss_fn.describe(),
                "ce_weight": config.ce_weight,
                "warmup_epochs": config.warmup_epochs,
                "epochs": config.num_train_epochs,
            },
            results={k: v for k, v in reports[loss_label].items() if k.startswith("accuracy")},
            plots=[p.name for k, p in paths.items() if k.endswith("plot")],
            comparison_table=table,
        )
        write_model_card(student_dir, card)
        if config.push_to_hub:
            url = push_student(student_dir, repo_id, token=hub_token, private=bool(config.hub_private_repo))
            logger.info("Pushed %s", url)
        print(f"\nBalanced test split, top-1 accuracy (%), {data_args.dataset} rho={data_args.imbalance_factor:g}\n")
        print(table)
        print(f"Student folder, card and report: {student_dir}")
    return reports


if __name__ == "__main__":
    main()
    close_processes()
