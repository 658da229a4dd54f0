"""Command-line arguments shared by the recipes: dataclasses for HfArgumentParser plus ``--config FILE.yaml``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Callable, NamedTuple

import yaml
from transformers import HfArgumentParser


@dataclass
class DataArguments:
    """Which data, and how it is made long-tailed."""

    dataset: str = field(
        default="builtin:digits",
        metadata={"help": "Hub dataset id, local imagefolder, save_to_disk folder, or builtin:digits (offline demo)."},
    )
    imbalance_factor: float = field(
        default=100.0, metadata={"help": "rho = n_max / n_min of the long-tailed split (>= 1)."}
    )
    lt_seed: int = field(default=0, metadata={"help": "Seed of the LDAM-DRW row selection."})
    lt_profile: str = field(default="exp", metadata={"help": "Long-tail profile: exp or step."})
    lt_exponent: str = field(
        default="standard",
        metadata={"help": "exp profile exponent: standard (c/(C-1), the community split) or paper (c/C)."},
    )
    class_order_seed: int | None = field(
        default=None,
        metadata={"help": "Shuffle which classes become head/tail with this seed (default: class 0 = head)."},
    )
    train_split: str | None = field(default=None, metadata={"help": "Training split name (default: train)."})
    test_split: str | None = field(
        default=None, metadata={"help": "Balanced test split name (default: test/validation)."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected)."})


class ModelSource(NamedTuple):
    """A model to build: the flag that named it (for messages), its timm source, and whether to load its weights."""

    flag: str
    source: str
    pretrained: bool


@dataclass
class ModelArguments:
    """Student and teacher."""

    student: str = field(default="cifar_wrn_40_1", metadata={"help": "timm architecture of the student."})
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Teacher: timm name (+ --teacher_checkpoint), local-dir:/hf-hub: spec or a saved folder. "
            "Default: train a biased teacher with cross-entropy on the same long-tailed split first."
        },
    )
    teacher_checkpoint: str | None = field(default=None, metadata={"help": "A .safetensors state dict for --teacher."})
    teacher_init: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune the biased teacher from this checkpoint (timm name with a pretrained tag such as "
            "resnet50.a1_in1k, hf-hub:org/name or local-dir:/path; safetensors only): its backbone, a new head for "
            "the dataset's classes. Replaces --teacher_architecture."
        },
    )
    student_init: str | None = field(
        default=None,
        metadata={
            "help": "Start the student (and the cross-entropy student) from this checkpoint, as --teacher_init. "
            "Replaces --student."
        },
    )
    teacher_architecture: str = field(
        default="cifar_resnet8x4",
        metadata={"help": "timm architecture of the teacher trained when --teacher is not given."},
    )
    teacher_epochs: float = field(default=30.0, metadata={"help": "Epochs of the cross-entropy teacher run."})
    teacher_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the teacher run (default: --learning_rate)."}
    )
    input_size: int | None = field(
        default=None,
        metadata={
            "help": "Train and evaluate at this square input size instead of the architectures' own "
            "(e.g. 64 for TinyImageNet with the CIFAR architectures)."
        },
    )
    allow_unsafe_pickle: bool = field(
        default=False,
        metadata={"help": "Allow a pickled (.pt/.pth/.bin) teacher checkpoint. Only for files you trust."},
    )
    compare_ce_student: bool = field(
        default=True, metadata={"help": "Also train the student with cross-entropy alone, for the comparison table."}
    )

    def __post_init__(self) -> None:
        if self.teacher_checkpoint is not None and self.teacher is None:
            raise ValueError(
                f"--teacher_checkpoint {self.teacher_checkpoint!r} needs --teacher <architecture name> (the model the "
                "weights belong to); without --teacher a teacher is trained here and the checkpoint would be ignored."
            )
        if self.teacher_init is not None and self.teacher is not None:
            raise ValueError(
                f"--teacher_init {self.teacher_init!r} fine-tunes a teacher here, but --teacher {self.teacher!r} gives "
                "a finished one; pass one of them."
            )
        if self.teacher_epochs <= 0:
            raise ValueError(f"--teacher_epochs must be > 0, got {self.teacher_epochs}.")

    def teacher_source(self) -> ModelSource:
        """What the teacher stage builds: a checkpoint with --teacher_init, else --teacher_architecture."""
        if self.teacher_init:
            return ModelSource("--teacher_init", self.teacher_init, pretrained=True)
        return ModelSource("--teacher_architecture", self.teacher_architecture, pretrained=False)

    def student_source(self) -> ModelSource:
        """What the student stages build: a checkpoint with --student_init, else --student."""
        if self.student_init:
            return ModelSource("--student_init", self.student_init, pretrained=True)
        return ModelSource("--student", self.student, pretrained=False)

    def model_kwargs(self) -> dict:
        """Keyword arguments for timm.create_model shared by teacher and student."""
        if self.input_size is None:
            return {}
        return {"pretrained_cfg_overlay": {"input_size": (3, self.input_size, self.input_size)}}


@dataclass
class RunArguments:
    """What to do with what an earlier run left in --output_dir, and the checks before training."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train every stage again from scratch, replacing what --output_dir holds. Without it, a finished "
            "stage is reused and an interrupted one resumed only when its recorded settings equal this command's."
        },
    )
    verify_images: bool = field(
        default=True,
        metadata={"help": "Decode every training and test image before training, naming any corrupt file."},
    )
    in_memory_data: bool = field(
        default=False,
        metadata={
            "help": "Decode the training and test splits once into uint8 tensors at each model's input size and "
            "augment (random crop, flip) and normalise the batches on the device (sets --device_augmentation): no "
            "per-image work in the data loader, for datasets that fit in memory and models of input size <= 64. "
            "Each training process holds its own copy; see --in_memory_max_gib."
        },
    )
    in_memory_max_gib: float = field(
        default=8.0,
        metadata={
            "help": "With --in_memory_data: refuse to decode when the splits would take more than this many GiB "
            "as uint8 (N x 3 x H x W bytes); raise it if the machine has the memory."
        },
    )

    def __post_init__(self) -> None:
        if not self.in_memory_max_gib > 0:
            raise ValueError(
                f"--in_memory_max_gib must be > 0, got {self.in_memory_max_gib}; it is the most GiB the in-memory "
                "splits may take (default 8)."
            )


CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEMO_CONFIG = os.path.join(CONFIGS, "demo.yaml")
BASE_CONFIG = os.path.join(CONFIGS, "base.yaml")


def default_config(argv: list[str]) -> str:
    """The config a command without --config starts from: the demo's for the built-in demo data, else the base
    recipe (recipes/configs/base.yaml), which holds no dataset-specific setting."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", default=None)
    dataset = pre.parse_known_args(argv)[0].dataset
    return DEMO_CONFIG if dataset in (None, "builtin:digits") else BASE_CONFIG


def _unset_with_none(argv: list[str], optional: set[str]) -> tuple[list[str], dict]:
    """``--name none`` for a setting that may be None: drop it from argv and return it as ``{name: None}``."""
    rest, unset, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        name, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in optional and not value and i + 1 < len(argv) and argv[i + 1].lower() == "none":
            unset[name], i = None, i + 2
            continue
        if name in optional and value.lower() == "none":
            unset[name], i = None, i + 1
            continue
        rest.append(arg)
        i += 1
    return rest, unset


def parse_with_config(
    dataclass_types: tuple, argv: list[str] | None = None, default_config: str | Callable[[list[str]], str] | None = None
) -> tuple:
    """Parse ``--config FILE.yaml`` (flat keys of the dataclasses; ``default_config`` when none is given), then the
    command line, which overrides it. ``--name none`` sets a setting that may be None (a list such as
    ``--lr_decay_epochs``, a config's value) back to None."""
    argv = sys.argv[1:] if argv is None else argv
    if callable(default_config):
        default_config = default_config(argv)
    # Settings that may be None and take no text ("--report_to none" is a value, not an unset). HfArgumentParser
    # rewrites field types in place (Optional[list[float]] becomes list[float]), so the default says it too.
    optional = {
        f.name
        for t in dataclass_types
        for f in fields(t)
        if (f.default is None or "None" in str(f.type)) and "str" not in str(f.type)
    }
    argv, unset = _unset_with_none(list(argv), optional)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=default_config)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument(
        "--config", default=default_config, help="YAML file of arguments; command-line flags override it."
    )
    if known.config is not None:
        if not os.path.isfile(known.config):
            raise FileNotFoundError(
                f"--config {known.config!r} does not exist; pass a YAML file such as recipes/configs/demo.yaml."
            )
        with open(known.config) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f"--config {known.config!r} must hold a mapping of argument names to values.")
        accepted = {f.name for t in dataclass_types for f in fields(t)}
        unknown = sorted(set(values) - accepted)
        if unknown:
            raise ValueError(f"--config {known.config!r} has unknown keys {unknown}; see --help for the accepted ones.")
        parser.set_defaults(**values)
    parser.set_defaults(**unset)
    return tuple(parser.parse_args_into_dataclasses(rest)[: len(dataclass_types)])
