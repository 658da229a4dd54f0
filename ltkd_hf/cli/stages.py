"""The steps the recipes share: the long-tailed data and its checks, models, and stages that never lie.

A stage (the biased teacher, the cross-entropy student, the distilled student) is one `DistillationTrainer` run
whose ``output_dir`` is ``<output_dir>/<stage>``: its checkpoints (``checkpoint-N``) and, once finished, the
canonical model folder. Every stage is planned before any trains: a finished stage is reused and an interrupted
one resumed only when the settings it recorded equal the command's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset
from safetensors.torch import load_file
from timm.data import resolve_data_config
from transformers import set_seed

from ..config import DistillationConfig
from ..data import (
    BatchAugmentation,
    InMemoryImages,
    apply_transforms,
    collate_fn,
    collate_images,
    in_memory_bytes,
    in_memory_datasets,
    load_held_out_split,
    load_image_dataset,
    load_split_manifest,
    verify_images,
)
from ..data.fingerprint import canonical_source, file_fingerprint, folder_fingerprint
from ..data.split_info import SplitInfo
from ..data.verify import image_path, shared_images
from ..data.transforms import SMALL_INPUT_MAX
from ..evaluation import describe_test_split, format_group_table
from ..hub.push import check_push_to_hub_ready
from ..hub.save import WEIGHTS_NAME
from ..models import create_student, load_teacher, pin_hub_source, unwrap_timm
from ..provenance import StaleOutputError, TeacherName, check_settings, published_source, read_settings, run_settings
from ..run_artefacts import check_resumable, checkpoints
from ..teacher_cache import check_cache_folder
from ..trainer import DistillationTrainer
from ..trainer_inputs import check_best_metric, check_run_length
from .arguments import DataArguments, GivenTeacherArguments, ModelSource, RunArguments, TeacherArguments
from .recorded import refuse_trained_on_test
from .settings import PUSH_SETTINGS, TEACHER_STAGE_SETTINGS

logger = logging.getLogger("ltkd_hf.cli")


@dataclass
class LongTailedData:
    """The long-tailed training split, the test split, a validation split when there is one, and what
    describes the training split."""

    train: Dataset
    test: Dataset
    split_info: SplitInfo
    validation: Dataset | None = None  # held-out data to choose settings on (never the test split)
    # What every report and card of a run on this data must say about it (held-out images copied from training ones)
    caveats: tuple[str, ...] = ()
    # The splits decoded once per data config (--in_memory_data), shared by the stages whose models take the same.
    in_memory: dict = field(default_factory=dict, repr=False, compare=False)

    def in_memory_splits(self, data_config: dict, max_gib: float) -> dict[str, InMemoryImages]:
        """``{"train", "test"}`` (and ``"validation"``) as `InMemoryImages` at ``data_config``'s input size, decoded
        on first use."""
        key = json.dumps(data_config, sort_keys=True, default=str)
        if key not in self.in_memory:
            held_out = {} if self.validation is None else {"validation": self.validation}
            try:
                splits = in_memory_datasets(
                    {"train": self.train, "test": self.test, **held_out}, data_config, max_bytes=int(max_gib * 2**30)
                )
            except ValueError as err:
                raise ValueError(f"--in_memory_data true: {err}") from None
            logger.info("In memory: %s", ", ".join(f"{name} {split}" for name, split in splits.items()))
            self.in_memory.clear()  # one decoding at a time: the stages run one after the other
            self.in_memory[key] = splits
        return self.in_memory[key]


def source_splits(args: DataArguments) -> str | dict[str, str] | None:
    """``load_image_dataset``'s ``split``: the held-out split's name, or both names, or None to detect them."""
    if args.train_split is None:
        return args.test_split
    if args.test_split is None:
        raise ValueError(
            f"--train_split {args.train_split!r} needs --test_split too: the name of the balanced held-out split."
        )
    named = {"train": args.train_split, "test": args.test_split}
    return named if args.validation_split is None else {**named, "validation": args.validation_split}


def every_class_has_images(dataset: str, split: Dataset, what: str) -> None:
    """Refuse ``split`` when a class has no images in it (its accuracy could not be learnt, or measured); a test
    split whose classes have unequal numbers of images is logged as not balanced."""
    names = split.features["label"].names
    counts = np.bincount(np.asarray(split["label"]), minlength=len(names))
    empty = [names[c] for c in range(len(names)) if counts[c] == 0]
    if empty:
        raise ValueError(
            f"--dataset {dataset}: classes {empty[:10]} have no {what} images, so their accuracy cannot be "
            f"{'learnt' if what == 'training' else 'measured'}; add images for them or remove their folders."
        )
    if what == "test" and counts.min() != counts.max():
        logger.warning(
            "The test split of --dataset %s is %s: overall accuracy is over its images, so the classes with more test "
            "images weigh more in it (the paper scores on a balanced split); the reports say so.",
            dataset, describe_test_split(counts.tolist()),
        )


def _as_flags(err: Exception, flags: dict[str, str]) -> str:
    """A library error's message for the command line: each Python argument it names (``label_column=``) as the
    flag that sets it (``--label_column``), or as ``it`` where the message's flag prefix already names the value."""
    message = str(err)
    for argument, flag in flags.items():
        message = message.replace(argument, flag)
    return message


# The dataset loaders' Python arguments, as the flags that set them: (pattern, replacement) for re.sub, in order.
_DATASET_FLAGS = (
    (r"\blabel_column=", "--label_column "), (r"\bimage_column=", "--image_column "),
    (re.escape("source='DIR'"), "--dataset DIR"),
    (re.escape("split=<the held-out split name> (the recipes: --test_split)"),
     "--test_split <the held-out split name>"),
    (re.escape("split=<the held-out split name> or split={'train': ..., 'test': ...} (the recipes: --test_split, and "
               "--train_split)"), "--test_split <the held-out split name>, and --train_split <the training split's>"),
    # load_split_manifest's: its image_root is the folder --dataset names
    (r"manifests\['(\w+)'\]='([^']*)'", r"--split_manifest \1=\2"),
    (r"\bimage_root=", "--dataset "), (r"\bimage_root\b", "--dataset"),
    (r"\bclass_names=", "--manifest_class_names "), (r"\bclass_names\b", "--manifest_class_names"),
)


@contextlib.contextmanager
def _dataset_errors(args: DataArguments):
    """A load error of ``args.dataset`` as a message naming ``--dataset`` and the flags that fix it."""
    try:
        yield
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        hint = ""
        folder = Path(args.dataset).expanduser()
        if "label column" in str(err) and folder.is_dir() and not (folder / "dataset_dict.json").is_file():
            hint = " (an image folder needs train/ and test/ subfolders holding one folder per class, at least 2)"
        message = str(err)
        for argument, flag in _DATASET_FLAGS:
            message = re.sub(argument, flag, message)
        raise type(err)(f"--dataset {args.dataset}{hint}: {message}") from None


def load_splits(args: DataArguments):
    """``args.dataset``'s splits (its ``--split_manifest``'s, when given), a load error's message naming
    ``--dataset`` and the flags that fix it."""
    with _dataset_errors(args):
        if args.split_manifest:
            return load_split_manifest(args.manifests(), args.dataset, class_names=args.manifest_class_names)
        return load_image_dataset(
            args.dataset, split=source_splits(args), image_column=args.image_column, label_column=args.label_column
        )


def load_held_out(args: DataArguments) -> tuple[Dataset, str, str]:
    """``args.dataset``'s held-out split (``--test_split``, or detected) alone, its source's canonical name and the
    split's name (`load_held_out_split`), a load error's message naming the flags that fix it."""
    with _dataset_errors(args):
        return load_held_out_split(args.dataset, split=args.test_split, image_column=args.image_column,
                                   label_column=args.label_column)


def load_long_tailed(args: DataArguments, *, verify: bool = False) -> LongTailedData:
    """Load ``args.dataset``, check that every class has training and test images (and, with ``verify``, that
    every image decodes), and build its long-tailed training split; the test split stays balanced."""
    splits = load_splits(args)
    every_class_has_images(args.dataset, splits["train"], "training")
    every_class_has_images(args.dataset, splits["test"], "test")
    if args.validation_per_class:
        if "validation" in splits:
            raise ValueError(
                f"--validation_per_class {args.validation_per_class}: --dataset {args.dataset} has its own validation "
                "split; drop --validation_per_class to use it."
            )
        try:
            splits = splits.hold_out_validation(args.validation_per_class, seed=args.lt_seed)
        except ValueError as err:
            raise ValueError(f"--validation_per_class {args.validation_per_class}: {err}") from None
    if args.split_manifest:  # the published long-tailed split, as it is
        info = splits.split_info
        logger.info("Published train split %s: %d images, %d classes", info.train_split, sum(info.class_counts),
                    info.num_classes)
    else:
        splits = splits.long_tailed(
            args.imbalance_factor,
            seed=args.lt_seed,
            profile=args.lt_profile,
            exponent=args.lt_exponent,
            class_order_seed=args.class_order_seed,
        )
        info = splits.split_info
        logger.info(
            "Long-tailed train split: %d images, %d classes, counts %d..%d",
            sum(info.class_counts), info.num_classes, max(info.class_counts), min(info.class_counts),
        )
        if len(set(info.class_counts)) == 1:
            raise ValueError(
                f"--imbalance_factor {args.imbalance_factor:g}: every class of --dataset {args.dataset} keeps "
                f"{info.class_counts[0]} training images, so there is no head or tail (the groups would split the "
                "classes by their index alone); pass --imbalance_factor > 1 (e.g. 100, CIFAR-100-LT's) to make the "
                "balanced training split long-tailed."
            )
    data = LongTailedData(splits["train"], splits["test"], info, splits.get("validation"))
    if verify:
        data.caveats = check_images(args.dataset, {"train": data.train, "validation": data.validation,
                                                   "test": data.test})
    return data


def check_images(dataset: str, splits: dict[str, Dataset | None]) -> tuple[str, ...]:
    """Decode every image of the splits a run reads (``"train"``, ``"validation"``, ``"test"``; a corrupt file stops
    it, by its name), and warn when held-out images are copies of training (or validation) images: a file copied
    into two splits is not held out. Returns those findings as the caveats the run's reports and cards state
    (without this machine's paths)."""
    splits = {name: split for name, split in splits.items() if split is not None}
    digests = {}
    for name, split in splits.items():
        try:
            digests[name] = verify_images(split, split=name)
        except ValueError as err:
            raise ValueError(f"{err} (--verify_images false skips this check)") from None
    caveats = []
    for held, seen in (("test", "train"), ("test", "validation"), ("validation", "train")):
        pairs = shared_images(digests[held], digests[seen]) if {held, seen} <= digests.keys() else []
        if pairs:
            row, twin = pairs[0]
            logger.warning(
                "%d of the %d %s images of --dataset %s are copies of %s images (e.g. %s is %s), so their accuracy "
                "is not held out; remove them from one of the two splits.", len(pairs), len(digests[held]),
                held, dataset, seen, image_path(splits[held], row), image_path(splits[seen], twin))
            caveats.append(f"{len(pairs)} of the {len(digests[held])} {held} images are copies of {seen} images "
                           "(the same file's bytes), so their accuracy is not held out")
    return tuple(caveats)


def setup_logging() -> None:
    """INFO logs on the main process, warnings on the others."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if PartialState().is_main_process else logging.WARNING,
    )


def check_push(config: DistillationConfig, repo_id: str) -> str | None:
    """With ``--push_to_hub true``, the Hub token, once the push to ``repo_id`` is known to be possible (checked
    before any training). Without it, None; a setting of the push is then refused: it would change nothing, and
    ``--hub_model_id`` would title the card after a repo nothing was pushed to."""
    if not config.push_to_hub:
        given = [name for name in PUSH_SETTINGS if getattr(config, name) not in (None, False)]
        if given:
            value = {"hub_token": "", "hub_private_repo": " true"}.get(given[0], f" {getattr(config, given[0])}")
            raise ValueError(f"--{given[0]}{value}: a setting of the push, and --push_to_hub is off, so it would "
                             "change nothing; add --push_to_hub true, or drop it.")
        return None
    return check_push_to_hub_ready(repo_id, config.hub_token)


def print_results(reports: dict[str, dict], group_names: list[str], caveats: tuple[str, ...]) -> None:
    """The group table of ``reports`` as the commands print it, with the data's caveats under it."""
    print(format_group_table(reports, group_names))
    for caveat in caveats:  # the numbers above are not all held out
        print(f"Caveat: {caveat}.")


def print_plan(stages) -> None:
    """``--dry_run``: every stage, what would happen to it, and its fully resolved settings."""
    if PartialState().is_main_process:
        for stage in stages:
            print(stage.describe())


def use_all_cpu_cores() -> None:
    """Give a lone CPU process every core it may run on. ``accelerate launch`` without a config sets
    OMP_NUM_THREADS=1 for each process (it sizes threads only with ``--cpu``), which halves a one-process run on
    a 2-core laptop; a run of several processes keeps what the launcher chose."""
    state = PartialState()
    launched = "ACCELERATE_MIXED_PRECISION" in os.environ  # set by accelerate launch for every process
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    one_thread = os.environ.get("OMP_NUM_THREADS") == "1"
    if launched and state.device.type == "cpu" and state.num_processes == 1 and one_thread:
        if torch.get_num_threads() < cores:
            torch.set_num_threads(cores)
            logger.info("accelerate launch set OMP_NUM_THREADS=1; this single CPU process uses its %d cores", cores)


def check_given_teacher(given: set[str], teacher: str) -> None:
    """With a finished ``--teacher``, refuse the flags ``given`` that set how the teacher is trained here: no teacher
    is trained, so they would change nothing."""
    unused = sorted(given & TEACHER_STAGE_SETTINGS)
    if unused:
        raise ValueError(f"--{unused[0]}: sets how the teacher is trained here, but --teacher {teacher} gives a "
                         "finished teacher; drop one of them.")


def check_output_dir(path: str) -> None:
    """Fail before any training when the output folder cannot be made or written. Nothing is made here: a refused
    command or a ``--dry_run`` leaves no folder behind (each stage makes its own when it trains)."""
    if not path.strip():  # Path("") is the current folder
        raise ValueError(f"--output_dir {path!r}: an empty name would write into the current folder; pass a folder "
                         "name, e.g. --output_dir outputs/my-run.")
    folder = Path(path).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))  # the root always exists
    if not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"no permission to write in {existing}"
    else:
        return
    raise ValueError(f"--output_dir {path!r} cannot be written ({reason}); pass a folder you can write to.")


def new_model(spec: ModelSource, data: LongTailedData, seed: int, **model_kwargs):
    """A model for a stage: fresh, initialised under ``seed`` (the same command gives the same weights), or
    ``pretrained`` from the checkpoint ``spec.source`` with a new head for the dataset's classes."""
    if spec.pretrained:
        refuse_trained_on_test(spec.flag, spec.source, data.split_info)
    set_seed(seed)
    try:
        return create_student(
            spec.source,
            num_classes=data.split_info.num_classes,
            label_names=data.split_info.label_names,
            pretrained=spec.pretrained,
            **model_kwargs,
        )
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"{spec.flag} {spec.source}: {_as_flags(err, {f'source={spec.source!r}': 'it'})}") from err


def stage_args(config: DistillationConfig, folder: str, **changes) -> DistillationConfig:
    """The run's arguments for one stage, in its own folder ``<output_dir>/<folder>``; stages push only on request."""
    return dataclasses.replace(config, output_dir=os.path.join(config.output_dir, folder), push_to_hub=False, **changes)


def cross_entropy_args(config: DistillationConfig, folder: str, **changes) -> DistillationConfig:
    """Arguments of a cross-entropy stage: none of the distilled student's objective (its loss, loss settings,
    warm-up, CE weight, logit adjustment, label smoothing) reaches it; ``changes`` set its own."""
    objective = dict(distill_loss="ce", distill_loss_kwargs=None, warmup_epochs=0.0, ce_weight=1.0,
                     ce_logit_adjustment=0.0, label_smoothing_factor=0.0, teacher_dtype="auto", teacher_cache=False)
    return stage_args(config, folder, **{**objective, **changes})


# The flags that set a recorded setting where it is not --<setting>: in every stage, and in the teacher's.
_RECIPE_FLAGS = {"device_augmentation": "--in_memory_data"}
_TEACHER_FLAGS = {"num_train_epochs": "--teacher_epochs",
                  "learning_rate": "--teacher_learning_rate (default --learning_rate)",
                  "ce_logit_adjustment": "--teacher_logit_adjustment"}


def teacher_args(config: DistillationConfig, teacher: TeacherArguments, folder: str = "teacher") -> DistillationConfig:
    """Arguments of the biased teacher's stage: cross-entropy (logit-adjusted with --teacher_logit_adjustment) for
    --teacher_epochs at --teacher_learning_rate (default --learning_rate)."""
    return cross_entropy_args(
        config,
        folder,
        num_train_epochs=teacher.teacher_epochs,
        learning_rate=teacher.teacher_learning_rate or config.learning_rate,
        ce_logit_adjustment=teacher.teacher_logit_adjustment,
    )


def teacher_cache_folder(stage_folder: Path, teacher_name: str | None) -> Path:
    """Where the teacher-logit cache of a stage's teacher lives: beside the teacher's folder
    (``<teacher folder>-logit-cache``: every run distilling from that folder shares it; outside it, so the teacher's
    own files, their fingerprint and its Hub upload stay as they are), else, and for a folder whose parent cannot
    be written, in the run's folder (``teacher-logit-cache`` beside the stage's folder)."""
    folder = getattr(teacher_name, "folder", None)
    # a teacher stage's parent folder may not exist yet when the stages are planned: this run makes it
    if folder is not None and (not folder.parent.exists() or os.access(folder.parent, os.W_OK)):
        return folder.parent / f"{folder.name}-logit-cache"
    return stage_folder.parent / "teacher-logit-cache"


def describe_teacher_stage(folder: Path, spec: ModelSource, args: DistillationConfig, teacher: TeacherArguments) -> str:
    """How the card, the report and the students' recorded settings name a teacher trained here: its stage folder's
    name within the run (students are its siblings, so a run folder moved, or named by another path, is the same
    run), its start and everything only the teacher stage sets (its epochs, learning rate and objective), so that a
    student distilled from another teacher is never taken for the same run."""
    tau = teacher.teacher_logit_adjustment
    objective = "cross-entropy" if not tau else f"logit-adjusted cross-entropy (tau {tau:g})"
    count, unit = (args.max_steps, "step") if args.max_steps > 0 else (args.num_train_epochs, "epoch")
    length = f"{count:g} {unit}" + ("" if count == 1 else "s")

    def named(source: str) -> str:
        how = f"{source} fine-tuned" if spec.pretrained else f"{source}, trained"
        return (f"{folder.name}/ of this run ({how} here for {length} at learning rate {args.learning_rate:g} with "
                f"{objective} on this split)")

    return TeacherName(named(spec.source), folder, published=named(published_source(spec.source)))


def given_teacher(args: GivenTeacherArguments):
    """The teacher named by --teacher (frozen) and how the card names it (a `TeacherName`, with the teacher's
    folder when --teacher is one)."""
    try:
        # A Hub teacher by the commit its revision points at now (a repo pushed again is another teacher).
        source = pin_hub_source(args.teacher)
        teacher = load_teacher(source, checkpoint=args.teacher_checkpoint, allow_unsafe_pickle=args.allow_unsafe_pickle)
    except (ValueError, FileNotFoundError) as err:
        flags = {f"source={args.teacher!r}": "it", "checkpoint=": "--teacher_checkpoint ",
                 "allow_unsafe_pickle=True": "--allow_unsafe_pickle true"}
        raise type(err)(f"--teacher {args.teacher}: {_as_flags(err, flags)}") from err
    # A local teacher by its absolute path (``dir``, ``./dir`` and ``/abs/dir`` are one teacher) and its files'
    # fingerprint (a teacher retrained in place is another teacher); the card and the report by its folder's name.
    local = Path(args.teacher_checkpoint or args.teacher).expanduser()
    fingerprint = ""
    if local.exists():
        fingerprint = f" [{folder_fingerprint(local) if local.is_dir() else file_fingerprint(local)}]"

    def named(spelled) -> str:
        weights = f" with the weights of {spelled(args.teacher_checkpoint)}" if args.teacher_checkpoint else ""
        return f"{spelled(source)}{weights}{fingerprint}"

    return teacher, TeacherName(named(_spelled), local.resolve() if local.is_dir() else None,
                                published=named(published_source))


def _spelled(source: str) -> str:
    """A model source as recorded: an existing local path absolute, anything else (a Hub id) as given."""
    return canonical_source(source, "local" if Path(source).expanduser().exists() else "hub")


@dataclass
class Stage:
    """A planned stage: its arguments, its fresh model, the settings it records, and what its folder holds."""

    name: str
    args: DistillationConfig
    model: object
    teacher_name: str | None
    settings: dict = field(default_factory=dict, repr=False)
    finished: bool = False
    resume: str | None = None
    clear: str = ""  # why the stage starts afresh, its checkpoints removed ("": it does not)
    stale: str = ""  # why its folder, made with other settings, can be neither reused nor resumed ("": it can)
    in_memory_max_gib: float | None = None  # set with --in_memory_data: the splits are decoded into memory
    description: str | None = None  # how a teacher stage is named as the students' teacher
    teacher_cache_dir: Path | None = None  # set with --teacher_cache: where the teacher's logits are cached

    @property
    def folder(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def status(self) -> str:
        """What running the plan does to this stage: reuse, resume, retrain (overwrite) or train."""
        return "reuse" if self.finished else "resume" if self.resume else "retrain" if self.clear else "train"

    def describe(self) -> str:
        """The stage for ``--dry_run``: its status, folder and every setting it records."""
        lines = [f"{self.name}: {self.status} {self.folder}"]
        if self.teacher_cache_dir is not None:
            lines.append(f"    teacher-logit cache: {self.teacher_cache_dir}")
        flat = _flatten_settings(self.settings)
        lines += [f"    {key} = {json.dumps(value)}" for key, value in flat.items()
                  if not key.startswith(("data.class_counts", "data.label_names"))]
        return "\n".join(lines)


def _flatten_settings(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for key, inner in value.items():
            out.update(_flatten_settings(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def check_in_memory(data: LongTailedData, model, run: RunArguments) -> None:
    """With --in_memory_data, what would stop the stage's decoding, raised before anything trains: a model whose
    training recipe is not the small-input one, splits above --in_memory_max_gib."""
    data_config = resolve_data_config(model=unwrap_timm(model))
    size = tuple(data_config["input_size"])
    if BatchAugmentation.from_data_config(data_config).padding is None:
        raise ValueError(
            f"--in_memory_data true: the model takes input_size {size}, above {SMALL_INPUT_MAX} px, whose training "
            "transform is timm's random-resized crop of the original image, which the in-memory copy cannot "
            "reproduce; drop --in_memory_data (or set --input_size to at most 64)."
        )
    needed = in_memory_bytes(len(data.train) + len(data.test), data_config)
    if needed > run.in_memory_max_gib * 2**30:
        raise ValueError(
            f"--in_memory_data true: the train and test splits ({len(data.train):,} + {len(data.test):,} images) "
            f"take {needed / 2**30:.3g} GiB as uint8 at input_size {size}, above --in_memory_max_gib "
            f"{run.in_memory_max_gib}; raise --in_memory_max_gib if the machine has the memory (each training "
            "process holds its own copy), or drop --in_memory_data."
        )


def plan_stage(
    name: str, args: DistillationConfig, model, data: LongTailedData, teacher_name: str | None, run: RunArguments,
    *, product: bool = False,
) -> Stage:
    """Decide, before anything trains, whether the stage is reused, resumed or trained from scratch; raise when its
    folder holds a run with other settings (each difference named) or files this library did not write. The
    program's ``product`` stage (ltkd-distill's student, ltkd-teacher's teacher) is the one a
    ``--resume_from_checkpoint`` folder resumes, and ``true`` needs a checkpoint in it."""
    if run.in_memory_data:
        check_in_memory(data, model, run)
        args = dataclasses.replace(args, device_augmentation=True)
    try:
        check_run_length(args, len(data.train))
    except ValueError as err:
        raise ValueError(f"stage {name}: {err}") from None
    try:
        groups = data.split_info.groups(args.num_groups)
    except ValueError as err:
        raise ValueError(f"--num_groups {args.num_groups}: {err}") from None
    check_best_metric(args, groups.names)
    settings = run_settings(args, data.split_info, model=model, teacher=teacher_name)
    stage = Stage(name, args, model, teacher_name, settings,
                  in_memory_max_gib=run.in_memory_max_gib if run.in_memory_data else None)
    if args.teacher_cache:
        if not run.in_memory_data:
            raise ValueError(
                "--teacher_cache true needs --in_memory_data true: the cache is looked up by each training image's "
                "row and the crop-and-flip outcome that the in-memory data's augmentation draws for it; add "
                "--in_memory_data true (models of input size up to 64 px), or drop --teacher_cache."
            )
        stage.teacher_cache_dir = teacher_cache_folder(stage.folder, teacher_name)
        check_cache_folder(stage.teacher_cache_dir, args.world_size)  # before any stage trains, not in its train()
    folder, resume = stage.folder, args.resume_from_checkpoint
    flags = {**_RECIPE_FLAGS, **(_TEACHER_FLAGS if name == "teacher" else {})}  # for a stale folder's message

    def matches(path: Path, what: str) -> bool:
        """Whether ``path`` holds a run of these settings; if not, why is kept in ``stage.stale`` (see refuse_stale)."""
        try:
            check_settings(path, settings, what=what, flags=flags, fix=None)
        except StaleOutputError as err:
            stage.stale = str(err)
        return not stage.stale
    if run.overwrite_output_dir:
        if resume not in (None, "false"):
            raise ValueError(
                f"--overwrite_output_dir true trains every stage from scratch, and --resume_from_checkpoint {resume} "
                "asks to resume; pass only one of them."
            )
        stage.clear = "--overwrite_output_dir true" if folder.is_dir() else ""
        return stage
    if product and resume not in (None, "true", "false"):
        if not Path(resume).is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {resume!r} is not a folder; pass a checkpoint-N folder.")
        check_settings(resume, settings, what="the checkpoint given with --resume_from_checkpoint", flags=flags,
                       fix="pass a checkpoint of a run with this command's settings, or drop --resume_from_checkpoint")
        check_resumable(resume)
        stage.resume = resume
        return stage
    if not folder.is_dir() or not any(folder.iterdir()):
        if product and resume == "true":
            raise ValueError(f"--resume_from_checkpoint true, but {folder} holds no checkpoint to resume.")
        return stage
    if read_settings(folder) is not None and (folder / WEIGHTS_NAME).is_file():
        stage.finished = matches(folder, f"a finished {name} stage")
        return stage
    complete, cut_short = checkpoints(folder)
    if not complete and not cut_short:
        raise ValueError(
            f"{folder} exists and holds files but no finished stage or checkpoint of ltkd_hf; pass "
            "--overwrite_output_dir true to use it anyway, or choose another --output_dir."
        )
    if resume == "false" or not complete:
        # an explicit fresh start, or a run killed while saving its first checkpoint: nothing to resume, and the old
        # checkpoint folders would be picked up later otherwise
        stage.clear = ("--resume_from_checkpoint false" if resume == "false"
                       else "its only checkpoint was cut short while saving")
    else:
        stage.resume = str(complete[-1]) if matches(complete[-1], f"a checkpoint of the {name} stage") else None
        if stage.resume:
            check_resumable(stage.resume)
    return stage


def refuse_stale(stages) -> None:
    """Raise one `StaleOutputError` naming every planned stage whose folder holds a run with other settings, each
    with its differences, and the fixes: delete those folders (the matching stages are still reused or resumed),
    retrain every stage with --overwrite_output_dir true, or another --output_dir."""
    stages = list(stages)
    stale = [stage for stage in stages if stage.stale]
    if not stale:
        return
    them = "it" if len(stale) == 1 else "them"
    kept = sum(1 for stage in stages if stage.finished or stage.resume)
    kept_note = ("" if not kept else "; the other stage, which matches this command, is still reused or resumed"
                 if kept == 1 else f"; the {kept} other stages, which match this command, are still reused or resumed")
    raise StaleOutputError(
        " ".join(stage.stale for stage in stale) + f" To train {them} again, delete "
        + ", ".join(str(stage.folder) for stage in stale) + kept_note + "; or pass --overwrite_output_dir true to "
        "train every stage of the command again, or choose another --output_dir."
    )


def plan_teacher(
    config: DistillationConfig,
    teacher: TeacherArguments,
    data: LongTailedData,
    run: RunArguments,
    *,
    folder: str = "teacher",
    product: bool = False,
    **model_kwargs,
) -> Stage:
    """The biased teacher's stage, the one way every program builds it: a model from --teacher_init or
    --teacher_architecture initialised under the run's seed, trained with `teacher_args`."""
    spec = teacher.teacher_source()
    model = new_model(spec, data, config.seed, **model_kwargs)
    args = teacher_args(config, teacher, folder)
    stage = plan_stage("teacher", args, model, data, None, run, product=product)
    stage.teacher_name = None
    stage.description = describe_teacher_stage(stage.folder, spec, args, teacher)
    return stage


def train_teacher(stage: Stage, data: LongTailedData):
    """Train (or reuse) the teacher stage, write (or reuse) its report, and return it frozen with the name the card
    gives it."""
    trainer = train_stage(stage, data)
    report = trainer.write_report(name="teacher", reuse=stage.finished)["teacher"]
    return load_teacher(str(stage.folder)), stage.description, trainer, report


def train_stage(stage: Stage, data: LongTailedData, teacher=None) -> DistillationTrainer:
    """Train (or resume) the stage and save its folder; a finished stage is loaded instead. The trainer's
    ``eval_dataset`` is the balanced test split with the model's own transforms; with ``stage.in_memory_max_gib`` set
    both splits are uint8 tensors at the model's input size, augmented and normalised on the device, and with
    ``stage.teacher_cache_dir`` set the teacher's logits are read from the cache there (created by the first stage
    that needs it, filled as stages draw their inputs)."""
    if stage.finished:
        unwrap_timm(stage.model).load_state_dict(load_file(stage.folder / WEIGHTS_NAME))
    state = PartialState()
    if state.is_main_process:
        for old in stage.folder.glob("checkpoint-*") if stage.clear else checkpoints(stage.folder)[1]:
            logger.info("Removing %s (%s)", old, f"a fresh start: {stage.clear}" if stage.clear
                        else "a save a kill cut short")
            shutil.rmtree(old)
    state.wait_for_everyone()
    data_config = resolve_data_config(model=unwrap_timm(stage.model))
    if stage.in_memory_max_gib is not None:
        prepared, collate = data.in_memory_splits(data_config, stage.in_memory_max_gib), collate_images
    else:
        splits = {"train": data.train, "test": data.test}
        if data.validation is not None:
            splits["validation"] = data.validation
        prepared, collate = apply_transforms(splits, data_config), collate_fn
    trainer = DistillationTrainer(
        model=stage.model,
        teacher_model=teacher,
        args=stage.args,
        train_dataset=prepared["train"],
        eval_dataset=prepared["test"],
        validation_dataset=prepared.get("validation"),
        split_info=data.split_info,
        teacher_name=stage.teacher_name,
        data_caveats=data.caveats,
        data_collator=collate,
        teacher_cache_dir=stage.teacher_cache_dir,
    )
    if stage.finished:
        logger.info("Stage %s: reusing %s (same settings)", stage.name, stage.folder)
    else:
        if stage.resume:
            logger.info("Stage %s: resuming from %s", stage.name, stage.resume)
        try:
            trainer.train(resume_from_checkpoint=stage.resume)
            trainer.save_model()
        except ValueError as err:  # a diverged run or a NaN teacher, found while training: the stage is not finished
            message = str(err)
            if stage.name == "teacher":  # its learning rate is its own flag's
                message = message.replace("--learning_rate", "--teacher_learning_rate")
            raise ValueError(f"stage {stage.name}: {message}") from err
    return trainer


def close_processes() -> None:
    """End a multi-process run cleanly: free the DDP-wrapped models (their gloo/NCCL reducers) while the process
    group is alive, then close the group on every process together; in another order the exit can abort
    ("terminate called without an active exception")."""
    gc.collect()
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
