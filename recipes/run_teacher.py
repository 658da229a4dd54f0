"""Train the biased teacher alone: plain cross-entropy on the long-tailed split, saved as a loadable folder.

    accelerate launch recipes/run_teacher.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_teacher.py        # the demo's teacher (recipes/configs/demo.yaml)

The folder (``<output_dir>/teacher``) is what ``--teacher`` of run_distill.py takes; its report shows the
teacher's per-group accuracy and its group mass on the balanced test split (the bias LTKD corrects).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from accelerate import PartialState  # noqa: E402

from ltkd_hf import ClassGroups, DistillationConfig  # noqa: E402
from ltkd_hf.evaluation import format_group_table, group_mass, write_report  # noqa: E402
from ltkd_hf.models import create_student  # noqa: E402
from recipe_args import DEMO_CONFIG, DataArguments, ModelArguments, parse_with_config  # noqa: E402
from steps import (  # noqa: E402
    close_processes,
    cross_entropy_args,
    load_long_tailed,
    save_model_folder,
    score,
    train_stage,
)


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, config = parse_with_config(
        (DataArguments, ModelArguments, DistillationConfig), argv, default_config=DEMO_CONFIG
    )
    with config.main_process_first(desc="loading the dataset"):  # one process downloads, the others read the cache
        data = load_long_tailed(data_args)
    groups = ClassGroups.from_counts(data.class_counts, config.num_groups)
    teacher = create_student(
        model_args.teacher_architecture,
        num_classes=len(data.class_counts),
        label_names=data.label_names,
        **model_args.model_kwargs(),
    )
    lr = model_args.teacher_learning_rate or config.learning_rate
    trainer = train_stage(
        teacher,
        cross_entropy_args(config, "teacher", num_train_epochs=model_args.teacher_epochs, learning_rate=lr),
        data,
    )
    folder = Path(config.output_dir) / "teacher"
    save_model_folder(
        teacher,
        folder,
        data.label_names,
        {"ltkd": {**data.description, "groups": groups.to_dict(), "class_counts": data.class_counts}},
    )
    test = trainer.eval_dataset  # the balanced test split with the teacher's transforms
    report, probs = score(teacher, test, data.class_counts, config.num_groups, config.per_device_eval_batch_size)
    if PartialState().is_main_process:
        write_report(
            folder,
            {"teacher": report},
            class_counts=data.class_counts,
            groups=groups,
            teacher_group_mass=group_mass(probs, groups),
            metadata={
                **data.description,
                "teacher": model_args.teacher_architecture,
                "evaluated": "last-epoch weights",
            },
        )
        print(format_group_table({"teacher": report}, groups.names))
        print(f"Teacher folder: {folder}")
    return report


if __name__ == "__main__":
    main()
    close_processes()
