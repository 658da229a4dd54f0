"""``ltkd-table``: the paper's table in one command, methods x seeds (x sweeps of a method's settings) on one setting.

    python recipes/run_table.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml \\
        --losses ce kd dkd dist bkd ltkd --seeds 0 1 2 --output_dir outputs/table-cifar100-r100
    python recipes/run_table.py --losses kd ltkd --seeds 0 1 2 --sweep alpha=1,6 beta=1,6   # on the demo data
    python recipes/run_table.py ... --teacher_losses ce logit_adjusted    # + KD from a balanced ("fixed") teacher
    python recipes/run_table.py ... --teacher outputs/my-teacher/teacher  # every seed distils from this teacher
    python recipes/run_table.py ... --dry_run                             # every run, its status and settings

Each seed trains its teachers once (``<output_dir>/seed<s>/teacher*``) and every cell distils from them
(``<output_dir>/seed<s>/<cell>``); finished cells are reused and stale ones refused, as in ``ltkd-distill``. Every
cell is planned, and its settings checked, before anything trains. A cell of loss X takes the config's
``methods.X`` (its loss settings and warm-up: the paper configs hold the authors' per pair), under the command
line's ``--warmup_epochs`` and, for --distill_loss's cells, ``--distill_loss_kwargs``. ``table.md`` /
``table.json`` hold tail and overall accuracy (%), mean ± sample std over the seeds, of the last-epoch weights,
with the teacher rows first (a given ``--teacher``: one row, scored once, as every seed distils from it).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState

from .._atomic import atomic_write_files
from ..config import DistillationConfig, check_loss_values, parse_loss_kwargs
from ..groups import ClassGroups
from ..evaluation import describe_test_split
from ..losses import LOSSES, available_losses
from ..losses.registry import hyperparameters_of
from ..models import check_teacher_matches
from ..run_artefacts import evaluated_weights
from .arguments import DataArguments, GivenTeacherArguments, InputArguments, RunArguments, StudentArguments, TeacherArguments
from .parsing import default_config, method_errors, method_settings, parse_args, run_program
from .recorded import check_teacher_data
from .settings import STUDENT_CE, setting
from .stages import (
    LongTailedData,
    check_given_teacher,
    check_output_dir,
    cross_entropy_args,
    given_teacher,
    load_long_tailed,
    new_model,
    plan_stage,
    plan_teacher,
    print_plan,
    refuse_stale,
    setup_logging,
    stage_args,
    train_stage,
    train_teacher,
    use_all_cpu_cores,
)

PROGRAM = "ltkd-table"
logger = logging.getLogger("ltkd_hf.cli")
# Each teacher's --teacher_logit_adjustment (tau); the logit-adjusted one's is --teacher_logit_adjustment when set.
TEACHER_LOSSES = {"ce": 0.0, "logit_adjusted": 1.0}


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
            "help": "Loss settings to sweep, SETTING=V1,V2,...: every combination is a row, for each loss that takes "
            "all of them (e.g. alpha=1,3,6 beta=1,6 for ltkd); num_groups=3,10 sweeps K for every distillation loss."
        },
    )
    teacher_losses: list[str] = field(
        default_factory=lambda: ["ce"],
        metadata={
            "help": "Teachers per seed: ce (the biased teacher) and/or logit_adjusted (balanced softmax, the "
            "'fix the teacher' baseline: tau 1, or --teacher_logit_adjustment); every distillation row is run from "
            "each."
        },
    )

    select_on: str | None = field(
        default=None,
        metadata={
            "help": "validation: for each method (loss and teacher) and seed, keep the sweep cell that is best on the "
            "validation split (--select_metric) and report its test numbers and chosen settings; needs a validation "
            "split (the dataset's own, or --validation_per_class N). Default: every cell is a row, chosen on nothing."
        },
    )
    select_metric: str = field(
        default="accuracy",
        metadata={"help": "What --select_on maximises: accuracy (overall) or accuracy_tail."},
    )

    def __post_init__(self) -> None:
        if self.select_on not in (None, "validation"):
            raise ValueError(f"--select_on {self.select_on!r}: the only held-out data to select on is 'validation'.")
        if self.select_metric not in ("accuracy", "accuracy_tail"):
            raise ValueError(f"--select_metric {self.select_metric!r}: choose accuracy or accuracy_tail.")
        unknown = sorted(set(self.losses) - set(available_losses()))
        if unknown:
            raise ValueError(f"--losses {unknown} are not registered losses; choose from {available_losses()}.")
        bad = sorted(set(self.teacher_losses) - set(TEACHER_LOSSES))
        if bad:
            raise ValueError(f"--teacher_losses {bad}: choose from {sorted(TEACHER_LOSSES)}.")
        empty = [name for name in ("losses", "seeds", "teacher_losses") if not getattr(self, name)]
        if empty:
            raise ValueError(f"--{empty[0]}: none given, so the table would have nothing to run; give at least one.")
        bad = [seed for seed in self.seeds if not 0 <= seed < 2**32]
        if bad:
            raise ValueError(f"--seeds {' '.join(map(str, self.seeds))}: {bad[0]} is not a seed; numpy's seeds are "
                             "0 to 2**32 - 1.")
        for name, values in (("seeds", self.seeds), ("losses", self.losses), ("teacher_losses", self.teacher_losses)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"--{name} {' '.join(map(str, values))}: {repeated} given twice; list each once.")
        for item in self.sweep:
            key, sep, values = item.partition("=")
            if not sep or not key or not values or "" in values.split(","):
                raise ValueError(f"--sweep {item!r}: write SETTING=V1,V2,... (e.g. alpha=1,3,6).")
        keys = [item.partition("=")[0] for item in self.sweep]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"--sweep {' '.join(self.sweep)}: {repeated[0]} swept twice; list all its values in one "
                             f"{repeated[0]}=V1,V2,....")

    def swept(self) -> dict[str, list[str]]:
        return {key: values.split(",") for key, _, values in (s.partition("=") for s in self.sweep)}


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


def table_cells(args: TableArguments) -> list[Cell]:
    """Every row: each loss, with each combination of the swept settings it takes, from each teacher. A swept
    setting that no selected loss takes is refused (a typo, or a training setting: sweep those with separate runs),
    and so is a swept value its setting does not take, naming --sweep."""
    sweep = args.swept()
    own = {k: v for k, v in sweep.items() if k != "num_groups"}
    distilled = [loss for loss in args.losses if loss != "ce"]
    takes = {loss: set(own) & set(hyperparameters_of(LOSSES[loss])) for loss in distilled}
    untaken = sorted(set(own) - set().union(*takes.values()))
    if untaken:
        offered = {"num_groups"}.union(*(hyperparameters_of(LOSSES[loss]) for loss in args.losses))
        close = difflib.get_close_matches(untaken[0], sorted(offered), n=1)
        hint = f"did you mean {close[0]!r}? Sweep" if close else "sweep"
        raise ValueError(
            f"--sweep {untaken[0]}=...: none of --losses {' '.join(args.losses)} takes {untaken[0]!r}; {hint} a "
            "setting of a selected loss (see --help for each loss's settings) or num_groups. Training settings "
            "(learning_rate, ...) are one run each: run the table once per value with its own --output_dir."
        )
    if "num_groups" in sweep and not distilled:
        raise ValueError(
            f"--sweep num_groups={','.join(sweep['num_groups'])}: sets the class groups of a distillation loss, and "
            f"--losses {' '.join(args.losses)} runs none, so it would change nothing; add a distillation loss to "
            "--losses, or drop the sweep."
        )
    for key, values in sweep.items():  # each value once, as its setting reads it: 1 and 1.0 would be one cell twice
        owners = [loss for loss in distilled if key in takes[loss]] or [None]  # None: num_groups
        checked = [[_swept_value(loss, key, value) for value in values] for loss in owners]  # by each that takes it
        typed = checked[0]
        twice = [value for i, value in enumerate(values) if typed[i] in typed[:i]]
        if twice:
            raise ValueError(f"--sweep {key}={','.join(values)}: {twice[0]} repeats a value already listed; list each "
                             "value once.")
    cells = []
    for loss in args.losses:
        if loss == "ce":
            cells.append(Cell("ce"))
            continue
        # a loss that takes every swept setting is swept over all of them; the others over num_groups only
        keys = list(sweep) if takes[loss] == set(own) else [k for k in sweep if k == "num_groups"]
        for teacher_loss in args.teacher_losses:
            for values in itertools.product(*(sweep[k] for k in keys)):
                cells.append(Cell(loss, tuple(zip(keys, values)), teacher_loss))
    return cells


def _swept_value(loss: str | None, key: str, text: str) -> Any:
    """A swept value as ``loss``'s setting ``key`` reads it (``loss`` None: ``num_groups``); a value the setting
    does not take is refused, naming --sweep."""
    if key != "num_groups":
        value = parse_loss_kwargs(loss, {key: text}, flag="--sweep")[key]
        check_loss_values(loss, {key: value}, flag="--sweep")
        return value
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"--sweep num_groups={text}: a number of class groups is a whole number >= 1.")
    return int(text)


def _swept_flag(err: ValueError, cell: Cell) -> str:
    """A cell's error naming ``--num_groups K`` where K is the cell's swept value (checked against the classes once
    the data is loaded) names --sweep, as the command set it."""
    swept = dict(cell.settings).get("num_groups")
    if swept is None:
        return str(err)
    return str(err).replace(f"--num_groups {int(swept)}:", f"--sweep num_groups={int(swept)}:")


def cell_args(config: DistillationConfig, cell: Cell, method: dict[str, Any]) -> DistillationConfig:
    """The cell's arguments: its loss with ``method`` (its ``distill_loss_kwargs`` and ``warmup_epochs``, see
    `method_settings`) under the cell's swept values (checked by `table_cells`)."""
    if cell.loss == "ce":
        return cross_entropy_args(config, cell.folder)
    settings = dict(cell.settings)
    num_groups = int(settings.pop("num_groups", config.num_groups))
    kwargs = {**method["distill_loss_kwargs"], **settings}
    return stage_args(config, cell.folder, distill_loss=cell.loss, distill_loss_kwargs=kwargs,
                      warmup_epochs=method["warmup_epochs"], num_groups=num_groups)


def summarise(
    per_seed: dict[str, list[dict]], tail: list[int], chosen: dict[str, list[dict]] | None = None
) -> dict[str, dict]:
    """Tail and overall accuracy (%) per row: each seed's, the mean and the sample std (``None`` for one seed); and,
    for a row selected on validation, the settings chosen for each seed (``chosen``). The tail is the accuracy over
    the test images of the classes ``tail`` (the table's rarest group) in every row, also in a row that swept
    ``num_groups`` (whose own report's rarest group holds other classes)."""
    summary = {}
    for row, reports in per_seed.items():
        entry: dict[str, Any] = {"seeds": len(reports)}
        for key in ("accuracy_tail", "accuracy"):
            values = np.array([100.0 * _score(r, key, tail) for r in reports])
            std = float(values.std(ddof=1)) if len(values) > 1 else None  # one seed has no sample std
            entry[key] = {"values": values.tolist(), "mean": float(values.mean()), "std": std}
        if chosen and row in chosen:
            entry["chosen on validation"] = chosen[row]
        summary[row] = entry
    return summary


def _classes_accuracy(report: dict, classes: list[int]) -> float:
    """Top-1 accuracy over the test images of ``classes``, from a report's per-class accuracy and test counts (nan
    when none of them has an image, as a dataset's own validation split may)."""
    counts = [report["test_counts"][c] for c in classes]
    total = sum(counts)
    return sum(report["per_class"][c] * n for c, n in zip(classes, counts) if n) / total if total else math.nan


def _score(report: dict, metric: str, tail: list[int]) -> float:
    """``accuracy``, or ``accuracy_tail``: the accuracy over the test images of the classes ``tail``."""
    return report["accuracy"] if metric == "accuracy" else _classes_accuracy(report, tail)


def select_on_validation(
    results: list[tuple[int, Cell, dict]], metric: str, tail: list[int]
) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """For each method (a loss from a teacher) and seed, the sweep cell best on the validation split by ``metric``
    (the tail: the classes ``tail``, as the table's column):
    ``({method row: [its test report per seed]}, {method row: [{seed, settings, validation value} per seed]})``."""
    best: dict[tuple[str, str, int], tuple[Cell, dict]] = {}
    for seed, cell, report in results:
        key = (cell.loss, cell.teacher_loss, seed)
        value = _score(report["validation"], metric, tail)
        if key not in best or value > _score(best[key][1]["validation"], metric, tail):
            best[key] = (cell, report)
    per_seed: dict[str, list[dict]] = {}
    chosen: dict[str, list[dict]] = {}
    for (loss, teacher_loss, seed), (cell, report) in best.items():
        row = Cell(loss, (), teacher_loss).row
        per_seed.setdefault(row, []).append(report)
        chosen.setdefault(row, []).append(
            {"seed": seed, "settings": {key: _swept_value(loss, key, text) for key, text in cell.settings},
             f"validation {metric} (%)": 100.0 * _score(report["validation"], metric, tail)}  # percent, as the table
        )
    return per_seed, chosen


def _over_seeds(seeds: list[int]) -> str:
    return f"mean ± sample std over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]} alone (no spread)"


def _choice(chosen: dict) -> str:
    """A seed's chosen cell in table.md: ``seed 0: alpha=6 (validation accuracy 61.25%)``."""
    settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen["settings"].items())
    metric, value = next((k, v) for k, v in chosen.items() if k.startswith("validation "))
    return f"seed {chosen['seed']}: {settings or 'its only setting'} ({metric.removesuffix(' (%)')} {value:.2f}%)"


def format_table(summary: dict[str, dict], title: str) -> str:
    """The Markdown table: a row per model, tail and overall mean (± sample std), the best student's in bold."""
    selected = any("chosen on validation" in entry for entry in summary.values())
    lines = [title, "", "| model | tail | all | seeds |" + (" chosen on validation |" if selected else ""),
             "|---|---:|---:|---:|" + ("---|" if selected else "")]
    students = [entry for row, entry in summary.items() if not row.startswith("teacher")]
    best = {k: max((round(e[k]["mean"], 2) for e in students), default=None) for k in ("accuracy_tail", "accuracy")}
    for row, entry in summary.items():
        cells = []
        for k in ("accuracy_tail", "accuracy"):
            text = f"{entry[k]['mean']:.2f}" + ("" if entry[k]["std"] is None else f" ± {entry[k]['std']:.2f}")
            bold = not row.startswith("teacher") and len(students) > 1 and round(entry[k]["mean"], 2) == best[k]
            cells.append(f"**{text}**" if bold else text)
        line = f"| {row} | {cells[0]} | {cells[1]} | {entry['seeds']} |"
        if selected:
            line += " " + "; ".join(_choice(c) for c in entry.get("chosen on validation") or []) + " |"
        lines.append(line)
    return "\n".join(lines) + "\n"


ARGUMENTS = (DataArguments, StudentArguments, TeacherArguments, GivenTeacherArguments, InputArguments, RunArguments,
             TableArguments, DistillationConfig)


def plan(argv: list[str] | None = None):
    """Parse the command and plan every stage of every seed (nothing trains)."""
    parsed = parse_args(PROGRAM, ARGUMENTS, argv, default=default_config)
    data_args, student_args, teacher_args, given_args, input_args, run_args, table_args, config = parsed.values
    cells = table_cells(table_args)
    if all(cell.loss == "ce" for cell in cells):  # no teacher, no distilled student: their settings reach nothing
        unused = sorted(name for name in parsed.given if STUDENT_CE not in setting(name, PROGRAM).reaches)
        if unused:
            raise ValueError(
                f"--{unused[0]}: sets the distilled students or their teacher, and --losses "
                f"{' '.join(table_args.losses)} distils none, so it would change nothing; add a distillation loss "
                "to --losses, or drop it."
            )
    if given_args.teacher is not None and table_args.teacher_losses != ["ce"]:
        raise ValueError(
            f"--teacher_losses {' '.join(table_args.teacher_losses)}: trains teachers here, but --teacher "
            f"{given_args.teacher} gives the one teacher every seed distils from; drop one of them."
        )
    if given_args.teacher is not None:
        check_given_teacher(parsed.given, given_args.teacher)
    taus = teacher_taus(parsed, teacher_args, table_args)
    if config.resume_from_checkpoint not in (None, "true", "false"):
        raise ValueError(
            f"--resume_from_checkpoint {config.resume_from_checkpoint}: a table has a stage per cell and seed, and "
            "each resumes its own last checkpoint when re-run; pass false to start them afresh, or drop it."
        )
    if "distill_loss_kwargs" in parsed.given and config.distill_loss not in table_args.losses:
        raise ValueError(
            f"--distill_loss_kwargs: it sets the cells of --distill_loss {config.distill_loss}, which --losses "
            f"{' '.join(table_args.losses)} does not run, so it would change nothing; add {config.distill_loss} to "
            "--losses, or name the loss it is for with --distill_loss."
        )
    given_kwargs = set(config.distill_loss_kwargs or {}) if "distill_loss_kwargs" in parsed.given else set()
    swept = {key for cell in cells if cell.loss == config.distill_loss for key, _ in cell.settings}
    overridden = sorted(given_kwargs & swept)
    if overridden:
        key = overridden[0]
        raise ValueError(
            f"--distill_loss_kwargs {key}={config.distill_loss_kwargs[key]}: --sweep {key}="
            f"{','.join(table_args.swept()[key])} sets {key} in every {config.distill_loss} cell, so it would change "
            f"nothing; drop {key} from one of them."
        )
    if "select_metric" in parsed.given and not table_args.select_on:
        raise ValueError(
            f"--select_metric {table_args.select_metric}: it chooses among sweep cells with --select_on validation, "
            "which is off, so it would change nothing; pass --select_on validation, or drop it."
        )
    if table_args.select_on and not table_args.sweep:
        raise ValueError("--select_on validation chooses among the cells of a --sweep; pass --sweep SETTING=V1,V2,....")
    features = [loss for loss in table_args.losses if LOSSES[loss].requires_features]
    if config.teacher_cache and features:
        raise ValueError(
            f"--teacher_cache true: --losses {' '.join(features)} read the teacher's intermediate features, which the "
            "cache (the teacher's logits only) does not hold; run them in a table without --teacher_cache, or drop "
            "them from --losses."
        )
    setup_logging()
    use_all_cpu_cores()
    check_output_dir(config.output_dir)
    teacher, given_name = given_teacher(given_args) if given_args.teacher else (None, None)
    with config.main_process_first(desc="loading the dataset"):
        data = load_long_tailed(data_args, verify=run_args.verify_images)
    if table_args.select_on and data.validation is None:
        raise ValueError(
            f"--select_on validation: --dataset {data_args.dataset} has no validation split; pass "
            "--validation_per_class N (a balanced one held out of the training images) or use a dataset with its own "
            "(an image folder's val/)."
        )
    if teacher is not None:
        try:
            check_teacher_matches(teacher, num_classes=data.split_info.num_classes,
                                  label_names=list(data.split_info.label_names))
        except ValueError as err:
            raise ValueError(f"--teacher {given_args.teacher}: {err}") from err
        check_teacher_data(given_args.teacher, data.split_info)
    out, kwargs = Path(config.output_dir), input_args.model_kwargs()
    distilled = any(cell.loss != "ce" for cell in cells)
    plans = []
    for seed in table_args.seeds:
        seed_config = dataclasses.replace(config, seed=seed, output_dir=str(out / f"seed{seed}"))
        teachers = {}
        if teacher is None and distilled:
            for teacher_loss in table_args.teacher_losses:
                own = dataclasses.replace(teacher_args, teacher_logit_adjustment=taus[teacher_loss])
                folder = "teacher" if teacher_loss == "ce" else f"teacher-{teacher_loss}"
                teachers[teacher_loss] = plan_teacher(seed_config, own, data, run_args, folder=folder, **kwargs)
        stages = []
        for cell in cells:
            model = new_model(student_args.student_source(), data, seed, **kwargs)
            name = None if cell.loss == "ce" else given_name or teachers[cell.teacher_loss].description
            try:
                with method_errors(parsed, cell.loss):
                    args = cell_args(seed_config, cell, method_settings(parsed, config, cell.loss))
                    stage = plan_stage(cell.folder, args, model, data, name, run_args)
            except ValueError as err:
                raise type(err)(f"seed {seed}, cell {cell.row!r}: {_swept_flag(err, cell)}") from None
            stages.append((cell, stage))
        plans.append((seed, teachers, stages))
    if table_args.select_on and table_args.select_metric == "accuracy_tail":
        tail = table_tail(data, config.num_groups)
        held = np.bincount(np.asarray(data.validation["label"]), minlength=data.split_info.num_classes)
        if not held[tail].any():
            names = [data.split_info.label_names[c] for c in tail]
            raise ValueError(
                f"--select_metric accuracy_tail: the validation split of --dataset {data_args.dataset} has no image of "
                f"the tail classes {names[:10]}, so every cell would score nan there and the choice would be "
                "arbitrary; pass --select_metric accuracy, or add validation images of those classes."
            )
    refuse_stale(stage for _, teachers, stages in plans for stage in [*teachers.values(), *(s for _, s in stages)])
    return parsed, data, plans, teacher


def teacher_taus(parsed, teacher_args: TeacherArguments, table_args: TableArguments) -> dict[str, float]:
    """The tau each of --teacher_losses trains with: --teacher_logit_adjustment, when set, is the logit-adjusted
    teacher's (the ce teacher is plain cross-entropy), and is refused where it would change nothing."""
    tau = teacher_args.teacher_logit_adjustment
    if "teacher_logit_adjustment" not in parsed.given | set(parsed.config):
        return TEACHER_LOSSES
    if "logit_adjusted" not in table_args.teacher_losses:
        raise ValueError(
            f"--teacher_logit_adjustment {tau:g}: sets the tau of the table's logit-adjusted teacher, and "
            f"--teacher_losses {' '.join(table_args.teacher_losses)} trains none (ce is plain cross-entropy, tau 0), "
            "so it would change nothing; add logit_adjusted to --teacher_losses, or drop it."
        )
    if tau == 0:
        raise ValueError(
            "--teacher_logit_adjustment 0: the logit-adjusted teacher would be plain cross-entropy, the ce teacher; "
            "pass tau > 0 (1: balanced softmax), or drop it."
        )
    return {**TEACHER_LOSSES, "logit_adjusted": tau}


def table_tail(data: LongTailedData, num_groups: int) -> list[int]:
    """The table's tail: the classes of the rarest of ``num_groups`` training-frequency groups, in every row and on
    validation."""
    groups = ClassGroups.from_counts(data.split_info.class_counts, num_groups)
    return groups.classes_of(groups.num_groups - 1)


def main(argv: list[str] | None = None) -> dict:
    """Run ``ltkd-table`` with ``argv`` (default: the command line); return the table's rows."""
    parsed, data, plans, given = plan(argv)
    data_args, *_, run_args, table_args, config = parsed.values
    if run_args.dry_run:
        for seed, teachers, stages in plans:
            print(f"# seed {seed}")
            print_plan([*teachers.values(), *(stage for _, stage in stages)])
        return {}
    per_seed: dict[str, list[dict]] = {}
    results: list[tuple[int, Cell, dict]] = []
    for seed, teachers, stages in plans:
        loaded = {}
        for teacher_loss, stage in teachers.items():
            row = "teacher" if teacher_loss == "ce" else f"teacher ({teacher_loss.replace('_', '-')})"
            loaded[teacher_loss], _, _, report = train_teacher(stage, data)
            per_seed.setdefault(row, []).append(report)
        for cell, stage in stages:
            teacher = None if cell.loss == "ce" else given if given is not None else loaded[cell.teacher_loss]
            trainer = train_stage(stage, data, teacher)
            reports = trainer.write_report(name=trainer.model_label, reuse=stage.finished)
            results.append((seed, cell, reports[trainer.model_label]))
            if given is not None and "teacher" in reports:  # one given teacher for every seed: one row, scored once
                per_seed.setdefault("teacher", [reports["teacher"]])
    tail = table_tail(data, config.num_groups)
    chosen = None
    if table_args.select_on:
        selected, chosen = select_on_validation(results, table_args.select_metric, tail)
        per_seed.update(selected)
        how = f"each method's sweep cell chosen per seed on the validation split by {table_args.select_metric}"
    else:
        for _, cell, report in results:
            per_seed.setdefault(cell.row, []).append(report)
        swept = len({cell.settings for _, cell, _ in results}) > 1
        how = "no cell selected on held-out data: every row is one setting" if swept else "one setting per method"
    summary = summarise(per_seed, tail, chosen)
    teacher_note = f"distilled from {parsed.values[3].teacher}; " if given is not None else ""
    test = describe_test_split(results[0][2]["test_counts"])  # every cell is scored on the one test split
    title = (f"Top-1 accuracy (%) on the test split ({test}) of {data_args.dataset}, {data.split_info.describe()}; "
             f"{teacher_note}{how}; {evaluated_weights(False, config.max_steps)}, {_over_seeds(table_args.seeds)}.")
    title += "".join(f" Caveat: {caveat}." for caveat in data.caveats)
    out = Path(config.output_dir)
    if PartialState().is_main_process:
        _say_what_is_replaced(out, summary)
        atomic_write_files(out, {
            "table.md": lambda p: p.write_text(format_table(summary, title), encoding="utf-8"),
            "table.json": lambda p: p.write_text(json.dumps({"title": title, "rows": summary}, indent=2) + "\n"),
        })
        print(format_table(summary, title))
    return summary


def _say_what_is_replaced(out: Path, summary: dict) -> None:
    """A table written into a folder that holds another command's table replaces it: say which rows go, and which
    rows lose seeds."""
    previous = out / "table.json"
    if not previous.is_file():
        return
    rows = json.loads(previous.read_text()).get("rows", {})
    gone = [row for row in rows if row not in summary]
    if gone:
        logger.warning("Replacing %s: its rows %s are not in this command's table (their cells' folders stay in %s).",
                       previous, gone, out)
    fewer = [row for row in summary if rows.get(row, {}).get("seeds", 0) > summary[row]["seeds"]]
    if fewer:
        logger.warning("Replacing %s: its rows %s were over more seeds than this command's (the other seeds' cells "
                       "stay in %s; pass them in --seeds to keep them in the table).", previous, fewer, out)


def cli() -> None:
    """The ``ltkd-table`` console command."""
    run_program(PROGRAM, main)


if __name__ == "__main__":
    cli()
