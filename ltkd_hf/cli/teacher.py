"""``ltkd-teacher``: train the biased teacher alone, plain cross-entropy on the long-tailed split.

    accelerate launch recipes/run_teacher.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_teacher.py        # the demo's teacher (or: ltkd-teacher)

The folder (``<output_dir>/teacher``) is exactly the teacher stage of ``ltkd-distill`` with the same config (which
then reuses it), and what ``--teacher`` takes; its report shows the teacher's per-group accuracy and its group mass
on the balanced test split (the bias LTKD corrects). Its flags are the teacher stage's: ``--teacher_epochs``,
``--teacher_learning_rate``, ``--teacher_logit_adjustment``, ... (``--help``); a config's student settings are
skipped.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from accelerate import PartialState

from ..config import DistillationConfig
from .arguments import DataArguments, InputArguments, RunArguments, TeacherArguments
from .parsing import default_config, parse_args, run_program
from .stages import (
    check_output_dir,
    check_push,
    load_long_tailed,
    plan_teacher,
    print_plan,
    print_results,
    refuse_stale,
    setup_logging,
    train_teacher,
    use_all_cpu_cores,
)

PROGRAM = "ltkd-teacher"
ARGUMENTS = (DataArguments, TeacherArguments, InputArguments, RunArguments, DistillationConfig)
logger = logging.getLogger("ltkd_hf.cli")


def plan(argv: list[str] | None = None):
    """Parse the command and plan the teacher stage (nothing trains)."""
    parsed = parse_args(PROGRAM, ARGUMENTS, argv, default=default_config)
    data_args, teacher_args, input_args, run_args, config = parsed.values
    setup_logging()
    use_all_cpu_cores()
    repo_id = config.hub_model_id or f"{Path(config.output_dir).name}-teacher"
    hub_token = check_push(config, repo_id)
    check_output_dir(config.output_dir)
    with config.main_process_first(desc="loading the dataset"):
        data = load_long_tailed(data_args, verify=run_args.verify_images)
    stage = plan_teacher(config, teacher_args, data, run_args, product=True, **input_args.model_kwargs())
    refuse_stale([stage])
    stage.args = dataclasses.replace(stage.args, hub_model_id=repo_id)  # where --push_to_hub puts it
    return parsed, data, stage, repo_id, hub_token


def main(argv: list[str] | None = None) -> dict:
    """Run ``ltkd-teacher`` with ``argv`` (default: the command line); return the teacher's report."""
    parsed, data, stage, _, hub_token = plan(argv)
    run_args, config = parsed.values[-2], parsed.values[-1]
    if run_args.dry_run:
        print_plan([stage])
        return {}
    _, _, trainer, report = train_teacher(stage, data)
    trainer.create_model_card()
    if config.push_to_hub:
        trainer.push_to_hub(token=hub_token)
        logger.info("Pushed %s to the Hub as %s", stage.folder, trainer.hub_model_id)
    if PartialState().is_main_process:
        print_results({"teacher": report}, trainer.groups.names, data.caveats)
        print(f"Teacher folder: {stage.folder}")
    return report


def cli() -> None:
    """The ``ltkd-teacher`` console command."""
    run_program(PROGRAM, main)


if __name__ == "__main__":
    cli()
