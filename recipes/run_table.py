"""The paper's table in one command: methods x seeds (x sweeps of a method's settings) on one setting.

    python recipes/run_table.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml \
        --losses ce kd dkd dist bkd ltkd --seeds 0 1 2 --output_dir outputs/table-cifar100-r100
    python recipes/run_table.py --losses kd ltkd --seeds 0 1 2 --sweep alpha=1,6 beta=1,6   # on the demo data
    python recipes/run_table.py ... --teacher_losses ce logit_adjusted    # + KD from a balanced ("fixed") teacher
    python recipes/run_table.py ... --dry_run                             # list the runs and folders, train nothing

Each seed trains its teachers once (``<output_dir>/seed<s>/teacher*``) and every cell distils from them
(``<output_dir>/seed<s>/<cell>``); finished cells are reused and stale ones refused, as in run_distill.py.
``table.md`` / ``table.json`` hold tail and overall accuracy (%), mean ± sample std over the seeds, of the
last-epoch weights, with the teacher rows first.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from accelerate import PartialState  # noqa: E402

from ltkd_hf import DistillationConfig  # noqa: E402
from ltkd_hf._atomic import atomic_write_files  # noqa: E402
from ltkd_hf.config import parse_loss_kwargs  # noqa: E402
from ltkd_hf.losses import available_losses  # noqa: E402
from ltkd_hf.models import load_teacher  # noqa: E402
from recipe_args import DataArguments, ModelArguments, RunArguments, default_config, parse_with_config  # noqa: E402
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
TEACHER_LOSSES = {"ce": 0.0, "logit_adjusted": 1.0}  # the tau of logit-adjusted cross-entropy


@dataclass
class TableArguments:
    """What the table holds."""

    losses: list[str] = field(
        default_factory=lambda: ["ce", "kd", "ltkd"],
        metadata={"help": "Methods, one row each (ce: the student trained with cross-entropy alone)."},
    )
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Training seeds: mean ± std over them."})
    sweep: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Settings to sweep, SETTING=V1,V2,...: every combination is a row, for each loss that takes all "
            "of them (e.g. alpha=1,3,6 beta=1,6 for ltkd); num_groups=3,10 sweeps K for every distillation loss."
        },
    )
    teacher_losses: list[str] = field(
        default_factory=lambda: ["ce"],
        metadata={
            "help": "Teachers per seed: ce (the biased teacher) and/or logit_adjusted (balanced softmax, the "
            "'fix the teacher' baseline); every distillation row is run from each."
        },
    )
    dry_run: bool = field(default=False, metadata={"help": "List the runs and their folders; train nothing."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.losses) - set(available_losses()))
        if unknown:
            raise ValueError(f"--losses {unknown} are not registered losses; choose from {available_losses()}.")
        bad = sorted(set(self.teacher_losses) - set(TEACHER_LOSSES))
        if bad:
            raise ValueError(f"--teacher_losses {bad}: choose from {sorted(TEACHER_LOSSES)}.")
        for item in self.sweep:
            key, sep, values = item.partition("=")
            if not sep or not key or not values:
                raise ValueError(f"--sweep {item!r}: write SETTING=V1,V2,... (e.g. alpha=1,3,6).")


@dataclass(frozen=True)
class Cell:
    """One row of the table: a loss, its swept settings, the teacher it distils from."""

    loss: str
    settings: tuple[tuple[str, Any], ...] = ()
    teacher_loss: str = "ce"

    @property
    def folder(self) -> str:
        parts = [self.loss, *(f"{k}={v}" for k, v in self.settings)]
        return "-".join(parts) + ("" if self.teacher_loss == "ce" else f"@{self.teacher_loss}-teacher")

    @property
    def row(self) -> str:
        text = self.loss.upper() if self.loss != "ce" else "student (CE)"
        if self.settings:
            text += " (" + ", ".join(f"{k}={v}" for k, v in self.settings) + ")"
        return text + ("" if self.teacher_loss == "ce" else f", {self.teacher_loss.replace('_', '-')} teacher")


def table_cells(args: TableArguments, num_groups: int) -> list[Cell]:
    """Every row: each loss, with each combination of the swept settings it takes, from each teacher."""
    sweep = {key: values.split(",") for key, _, values in (s.partition("=") for s in args.sweep)}
    cells = []
    for loss in args.losses:
        if loss == "ce":
            cells.append(Cell("ce"))
            continue
        own = {k: v for k, v in sweep.items() if k != "num_groups"}
        try:
            parse_loss_kwargs(loss, {k: v[0] for k, v in own.items()})
            keys = list(sweep)
        except ValueError:  # the loss does not take every swept setting: it runs once (K still swept)
            keys = [k for k in sweep if k == "num_groups"]
        for teacher_loss in args.teacher_losses:
            for values in itertools.product(*(sweep[k] for k in keys)):
                cells.append(Cell(loss, tuple(zip(keys, values)), teacher_loss))
    return cells


def cell_args(config: DistillationConfig, cell: Cell) -> DistillationConfig:
    if cell.loss == "ce":
        return cross_entropy_args(config, cell.folder)
    settings = dict(cell.settings)
    num_groups = int(settings.pop("num_groups", config.num_groups))
    kwargs = {**config.distill_loss_kwargs, **settings} if cell.loss == config.distill_loss else settings
    return stage_args(config, cell.folder, distill_loss=cell.loss, distill_loss_kwargs=kwargs, num_groups=num_groups)


def summarise(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Tail and overall accuracy (%) per row: each seed's, the mean and the sample std."""
    summary = {}
    for row, reports in per_seed.items():
        entry = {"seeds": len(reports)}
        for key in ("accuracy_tail", "accuracy"):
            values = np.array([100.0 * r[key] for r in reports])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry[key] = {"values": values.tolist(), "mean": float(values.mean()), "std": std}
        summary[row] = entry
    return summary


def format_table(summary: dict[str, dict], title: str) -> str:
    lines = [title, "", "| model | tail | all | seeds |", "|---|---:|---:|---:|"]
    for row, entry in summary.items():
        cells = [f"{entry[k]['mean']:.2f} ± {entry[k]['std']:.2f}" for k in ("accuracy_tail", "accuracy")]
        lines.append(f"| {row} | {cells[0]} | {cells[1]} | {entry['seeds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, run_args, table_args, config = parse_with_config(
        (DataArguments, ModelArguments, RunArguments, TableArguments, DistillationConfig), argv,
        default_config=default_config,
    )
    use_all_cpu_cores()
    state = PartialState()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if state.is_main_process else logging.WARNING)
    check_output_dir(config.output_dir)
    with config.main_process_first(desc="loading the dataset"):
        data = load_long_tailed(data_args)
        check_data(data, dataset=data_args.dataset, verify=run_args.verify_images)
    out, kwargs = Path(config.output_dir), model_args.model_kwargs()
    cells = table_cells(table_args, config.num_groups)

    # Plan every stage of every seed before anything trains: stale folders stop the command here.
    plans = []
    for seed in table_args.seeds:
        seed_config = dataclasses.replace(config, seed=seed, output_dir=str(out / f"seed{seed}"))
        teachers = {}
        for teacher_loss in table_args.teacher_losses:
            name = "teacher" if teacher_loss == "ce" else f"teacher-{teacher_loss}"
            spec = model_args.teacher_source()
            model = new_model(spec, data, seed, **kwargs)
            args = cross_entropy_args(
                seed_config, name, num_train_epochs=model_args.teacher_epochs,
                learning_rate=model_args.teacher_learning_rate or config.learning_rate,
                ce_logit_adjustment=TEACHER_LOSSES[teacher_loss],
            )
            stage = plan_stage(name, args, model, data, None, run_args)
            teachers[teacher_loss] = (stage, f"{stage.folder} ({spec.source}, trained here with {teacher_loss} on this split)")
        stages = []
        spec = model_args.student_source()
        for cell in cells:
            model = new_model(spec, data, seed, **kwargs)
            teacher_name = None if cell.loss == "ce" else teachers[cell.teacher_loss][1]
            stages.append((cell, plan_stage(cell.folder, cell_args(seed_config, cell), model, data, teacher_name, run_args)))
        plans.append((seed, teachers, stages))

    if table_args.dry_run:
        for seed, teachers, stages in plans:
            for stage, _ in teachers.values():
                print(f"seed {seed}  {'teacher':<40} {_status(stage):<8} {stage.folder}")
            for cell, stage in stages:
                print(f"seed {seed}  {cell.row:<40} {_status(stage):<8} {stage.folder}")
        return {}

    per_seed: dict[str, list[dict]] = {}
    for seed, teachers, stages in plans:
        loaded = {}
        for teacher_loss, (stage, _) in teachers.items():
            row = "teacher" if teacher_loss == "ce" else f"teacher ({teacher_loss.replace('_', '-')})"
            report = train_stage(stage, data).write_report(name="teacher")["teacher"]
            per_seed.setdefault(row, []).append(report)
            loaded[teacher_loss] = load_teacher(str(stage.folder))
        for cell, stage in stages:
            teacher = None if cell.loss == "ce" else loaded[cell.teacher_loss]
            trainer = train_stage(stage, data, teacher)
            per_seed.setdefault(cell.row, []).append(trainer.write_report(name=trainer.model_label)[trainer.model_label])
    summary = summarise(per_seed)
    title = (f"Top-1 accuracy (%) on the balanced test split of {data_args.dataset}, {data.split_info.describe()}; "
             f"last-epoch weights, mean ± sample std over seeds {table_args.seeds}.")
    if state.is_main_process:
        atomic_write_files(out, {
            "table.md": lambda p: p.write_text(format_table(summary, title), encoding="utf-8"),
            "table.json": lambda p: p.write_text(json.dumps({"title": title, "rows": summary}, indent=2) + "\n"),
        })
        print(format_table(summary, title))
    return summary


def _status(stage) -> str:
    return "reuse" if stage.finished else "resume" if stage.resume else "train"


if __name__ == "__main__":
    main()
    close_processes()
