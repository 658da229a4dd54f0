"""``ltkd-eval``: evaluate any saved student (a folder or a Hub id) on any split: overall, per-group and per-class.

    python recipes/run_eval.py --model outputs/ltkd-demo/student --dataset builtin:digits --output_dir eval-out

The groups come from the training class counts recorded in the folder's config.json; for a model trained
elsewhere, they are rebuilt from --dataset/--imbalance_factor/--lt_seed as in training (--imbalance_factor must
then be given). The report states how the
model was trained only from what its folder records ("not recorded" otherwise), and, when --dataset is the source
it trained on, how many test images are copies of its training images (--verify_images). A model whose classes
(count or names, in order) differ from the dataset's is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from timm.data import resolve_data_config
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState

from ..config import DistillationConfig
from ..data import SplitInfo, apply_transforms, collate_fn
from ..models import label_names_of, load_classifier, unwrap_timm
from ..run_artefacts import evaluated_weights
from ..trainer import DistillationTrainer
from .arguments import DataArguments
from .parsing import parse_args, run_program
from .recorded import recorded_config, recorded_settings, recorded_split, trained_on
from .stages import (
    check_images, check_output_dir, every_class_has_images, load_held_out, load_long_tailed, load_splits, print_results,
)

PROGRAM = "ltkd-eval"
NOT_RECORDED = "not recorded"
# Which training split, and how it is made long-tailed: the report's groups come from it, unless the model records
# its own (then only the held-out split is read).
_SPLIT_FLAGS = ("imbalance_factor", "lt_seed", "lt_profile", "lt_exponent", "class_order_seed", "validation_per_class",
                "train_split")
# Each split flag's name in the construction a trained folder records (its config.json's data.long_tail).
_RECORDED_AS = {"imbalance_factor": "imbalance_factor", "lt_seed": "seed", "lt_profile": "profile",
                "lt_exponent": "exponent", "class_order_seed": "class_order_seed"}
logger = logging.getLogger("ltkd_hf.cli")


@dataclass
class EvalArguments:
    model: str = field(
        default=None,
        metadata={"help": "Student folder or Hub model (hf-hub:<owner>/<name>[@<revision>] or the bare id), required."},
    )
    output_dir: str = field(default="eval-report", metadata={"help": "Where report.json/report.md and plots go."})
    num_groups: int = field(default=3, metadata={"help": "K frequency groups of the report."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size."})
    verify_images: bool = field(
        default=True,
        metadata={"help": "Decode every test image first, naming any corrupt file; and when --dataset is the source "
                  "the model records training on, rebuild its long-tailed training split as recorded, decode it too "
                  "and state in the report the test images that are copies of its training images."},
    )

    def __post_init__(self) -> None:
        if self.model is None:
            raise ValueError("--model is required: a student folder (e.g. outputs/ltkd-demo/student) or a Hub id.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")
        if self.num_groups < 1:
            raise ValueError(f"--num_groups must be >= 1, got {self.num_groups}.")


ARGUMENTS = (DataArguments, EvalArguments)


def evaluated_checkpoint(model: str) -> str | None:
    """A Trainer checkpoint folder's place in its run ("checkpoint at step 2 of 8, epoch 0.5 of 2"), from its
    trainer_state.json; None for any other model."""
    path = Path(model) / TRAINER_STATE_NAME
    if not path.is_file():
        return None
    state = TrainerState.load_from_json(str(path))
    return (f"checkpoint at step {state.global_step} of {state.max_steps}, epoch {state.epoch:g} of "
            f"{state.num_train_epochs:g}")


def training_facts(config: dict, checkpoint: str | None = None) -> dict[str, object]:
    """What the model's folder records about its training, for the report; ``not recorded`` where it says nothing.
    ``checkpoint``: where in its run a checkpoint folder's weights are (`evaluated_checkpoint`)."""
    ltkd = config.get("ltkd") or {}
    settings = recorded_settings(config)
    data = settings.get("data") or {}
    schedule = settings.get("schedule") or {}
    split = NOT_RECORDED
    if data.get("class_counts"):
        split = recorded_split(data).describe()
    return {
        "trained on": data.get("source") or NOT_RECORDED,
        "training split": split,
        "model": settings.get("model") or NOT_RECORDED,
        "teacher": settings.get("teacher") if "teacher" in settings else NOT_RECORDED,
        "objective": ltkd.get("objective") or NOT_RECORDED,
        "training seed": schedule.get("seed", NOT_RECORDED),
        "evaluated": checkpoint or (NOT_RECORDED if "load_best_model_at_end" not in schedule
                                    else evaluated_weights(schedule["load_best_model_at_end"],
                                                           schedule.get("max_steps", -1))),
    }


def _say_config_split_is_not_the_models(parsed, recorded: dict, model: str) -> None:
    """A config (one serves every program of a setting) whose split differs from the one ``model`` records: the
    report's groups come from the model's, so say that the config's value is not used."""
    made = (recorded_settings(recorded).get("data") or {}).get("long_tail") or {}
    differ = [(flag, parsed.config[flag], made[key]) for flag, key in _RECORDED_AS.items()
              if flag in parsed.config and key in made and parsed.config[flag] != made[key]]
    for flag, given, used in differ:
        logger.warning("--config %s: %s %s is not the split --model %s was trained on (%s %s); the report's groups "
                       "come from the model's own record.", parsed.config_name, flag, given, model, flag, used)


def refuse_training_split(data: dict, source: str, test_split: str, model: str) -> None:
    """Refuse to score ``model`` on the split of the source it was trained on (``data``: what its folder records):
    the report would call its training images the test split."""
    if trained_on(data, source, test_split):
        raise ValueError(
            f"--test_split {test_split}: --model {model} was trained on the split {test_split!r} of {source}, so its "
            "accuracy there is not held out (the report would call its training images the test split); pass the "
            "held-out split, e.g. --test_split test."
        )


def model_training_split(data_args: DataArguments, data: dict, source: str, test_split: str) -> Dataset | None:
    """The images a model trained on, when its folder records (``data``) a long-tailed split of ``source``, the
    source evaluated (its split ``test_split``): that split rebuilt as recorded (its construction and held-out
    validation), to find the test images it trained on. None when it trained on other data, or on a split that
    cannot be rebuilt (a published manifest; a source whose training split is gone or changed since: then it says
    so)."""
    made = data.get("long_tail")
    if not made or not trained_on(data, source, data.get("train_split")):
        return None
    holdout = data.get("validation_holdout") or {}
    args = dataclasses.replace(
        data_args, train_split=data["train_split"], test_split=test_split,
        validation_per_class=holdout.get("per_class"), **{flag: made[key] for flag, key in _RECORDED_AS.items()},
    )
    logger.info("Rebuilding the training split the model records (%s) to find test images it trained on.",
                recorded_split(data).describe())
    try:
        rebuilt = load_long_tailed(args)
    except (ValueError, FileNotFoundError) as err:  # e.g. a folder that kept its test split alone
        logger.warning("The training split the model records cannot be rebuilt from %s (%s): its test images are not "
                       "compared with its training images.", source, err)
        return None
    if list(rebuilt.split_info.class_counts) != list(data["class_counts"]):
        logger.warning("The training split of %s rebuilt as the model records has other class counts than it "
                       "trained on (the data changed since): its test images are not compared with its training "
                       "images.", source)
        return None
    return rebuilt.train


def check_report_folder(output_dir: Path, model: str) -> None:
    """``output_dir`` may hold this model's earlier report (a re-run replaces it, however the model's folder is
    spelt), not a saved model's folder nor another model's report: those would be overwritten without a word."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir}: is a file; pass a folder for the report.")
    if (output_dir / "config.json").is_file():
        raise ValueError(
            f"--output_dir {output_dir}: holds a saved model, whose report.json is its own; write the evaluation to "
            "another folder."
        )
    report = output_dir / "report.json"
    rows = list(json.loads(report.read_text()).get("models", {})) if report.is_file() else [model]
    if not any(row == model or Path(row).is_dir() and Path(row).resolve() == Path(model).resolve() for row in rows):
        raise ValueError(
            f"--output_dir {output_dir}: holds the report of {rows}; write the evaluation of --model {model} to "
            "another folder, or remove that report."
        )


def main(argv: list[str] | None = None) -> dict:
    """Run ``ltkd-eval`` with ``argv`` (default: the command line); return the model's report."""
    parsed = parse_args(PROGRAM, ARGUMENTS, argv)
    data_args, eval_args = parsed.values
    recorded = recorded_config(eval_args.model)
    trained_data = recorded_settings(recorded).get("data") or {}  # what the model records of its training data
    counts = trained_data.get("class_counts")
    split_flags = sorted(parsed.given & set(_SPLIT_FLAGS))
    if counts and split_flags:
        raise ValueError(
            f"--{split_flags[0]}: --model {eval_args.model} records the training split it was made with (its class "
            "counts give the report's groups), so the flag would change nothing; drop it."
        )
    if counts:
        _say_config_split_is_not_the_models(parsed, recorded, eval_args.model)
    check_report_folder(Path(eval_args.output_dir), eval_args.model)
    check_output_dir(eval_args.output_dir)
    if counts and not data_args.split_manifest:  # the model records its training split: the held-out one alone
        test, source, test_split = load_held_out(data_args)
    else:
        loaded = load_splits(data_args)  # the source and the held-out split by its real name
        test, source, test_split = loaded["test"], loaded.split_info.source, loaded.split_info.test_split
    if counts:
        refuse_training_split(trained_data, source, test_split, eval_args.model)
    names = list(test.features["label"].names)
    every_class_has_images(data_args.dataset, test, "test")
    caveats = ()
    if eval_args.verify_images:
        trained = model_training_split(data_args, trained_data, source, test_split)
        caveats = check_images(data_args.dataset, {"train": trained, "test": test})
    try:
        model = load_classifier(eval_args.model)
    except (OSError, ValueError) as err:  # a folder without weights: transformers' OSError
        raise (ValueError if isinstance(err, ValueError) else FileNotFoundError)(
            f"--model {eval_args.model}: {err}") from None
    model_names = label_names_of(model)  # its config's id2label, or timm's pretrained_cfg label_names
    if model.config.num_labels != len(names) or model_names not in (None, names):
        predicts = f"{len(model_names)} classes {model_names[:10]}" if model_names else (
            f"{model.config.num_labels} classes")
        raise ValueError(
            f"--model {eval_args.model} predicts {predicts}, but --dataset {data_args.dataset} has {len(names)} "
            f"classes {names[:10]} (names in class-index order must be equal); evaluate the model on the dataset it "
            "was trained for."
        )
    if not counts and "imbalance_factor" not in parsed.given | set(parsed.config):
        raise ValueError(
            f"--imbalance_factor: --model {eval_args.model} records no training split, so the report's groups are "
            f"rebuilt from --dataset {data_args.dataset} as the model was trained on it; pass --imbalance_factor 1 "
            "when it trained on the training split as it is (a folder that is already long-tailed), or the rho it was "
            "made long-tailed with (and its --lt_seed)."
        )
    counts = counts or list(load_long_tailed(data_args).split_info.class_counts)
    info = SplitInfo(counts, names, source, test_split=test_split)
    try:
        info.groups(eval_args.num_groups)
    except ValueError as err:
        default = "" if "num_groups" in parsed.given | set(parsed.config) else " (the default)"
        raise ValueError(f"--num_groups {eval_args.num_groups}{default}: {err}") from None
    prepared = apply_transforms({"test": test}, resolve_data_config(model=unwrap_timm(model)))["test"]
    config = DistillationConfig(
        output_dir=eval_args.output_dir,
        distill_loss="ce",
        num_groups=eval_args.num_groups,
        per_device_eval_batch_size=eval_args.batch_size,
        report_to="none",
    )
    trainer = DistillationTrainer(model, None, config, split_info=info, eval_dataset=prepared, data_collator=collate_fn,
                                  data_caveats=caveats)
    evaluated_on = {"evaluated on": f"{source}, split {test_split}"}
    facts = training_facts(recorded, evaluated_checkpoint(eval_args.model))
    reports = trainer.write_report(name=eval_args.model, metadata={**evaluated_on, **facts})
    print_results(reports, trainer.groups.names, caveats)
    print(f"Report (report.md, report.json, plots): {Path(eval_args.output_dir).absolute()}")
    return reports[eval_args.model]


def cli() -> None:
    """The ``ltkd-eval`` console command."""
    run_program(PROGRAM, main)


if __name__ == "__main__":
    cli()
