"""Train the biased teacher alone: plain cross-entropy on the long-tailed split, saved as a loadable folder.

    accelerate launch recipes/run_teacher.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_teacher.py        # the demo's teacher (recipes/configs/demo.yaml)

The folder (``<output_dir>/teacher``) is what ``--teacher`` of run_distill.py takes; its report shows the
teacher's per-group accuracy and its group mass on the balanced test split (the bias LTKD corrects).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from accelerate import PartialState  # noqa: E402

from ltkd_hf import DistillationConfig  # noqa: E402
from ltkd_hf.evaluation import format_group_table  # noqa: E402
from recipe_args import DataArguments, ModelArguments, RunArguments, default_config, parse_with_config  # noqa: E402
from steps import (  # noqa: E402
    check_data,
    close_processes,
    cross_entropy_args,
    load_long_tailed,
    new_model,
    plan_stage,
    train_stage,
    use_all_cpu_cores,
)


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, run_args, config = parse_with_config(
        (DataArguments, ModelArguments, RunArguments, DistillationConfig), argv, default_config=default_config
    )
    use_all_cpu_cores()
    with config.main_process_first(desc="loading the dataset"):  # one process downloads, the others read the cache
        data = load_long_tailed(data_args)
        check_data(data, dataset=data_args.dataset, verify=run_args.verify_images)
    model = new_model(model_args.teacher_source(), data, config.seed, **model_args.model_kwargs())
    lr = model_args.teacher_learning_rate or config.learning_rate
    args = cross_entropy_args(config, "teacher", num_train_epochs=model_args.teacher_epochs, learning_rate=lr)
    trainer = train_stage(plan_stage("teacher", args, model, data, None, run_args), data)
    reports = trainer.write_report(name="teacher")
    trainer.create_model_card()
    if PartialState().is_main_process:
        print(format_group_table(reports, trainer.groups.names))
        print(f"Teacher folder: {args.output_dir}")
    return reports["teacher"]


if __name__ == "__main__":
    main()
    close_processes()
