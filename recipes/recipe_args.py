"""Command-line arguments shared by the recipes: dataclasses for HfArgumentParser plus ``--config FILE.yaml``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields

import yaml
from transformers import HfArgumentParser


@dataclass
class DataArguments:
    """Which data, and how it is made long-tailed (LTKD.md §4)."""

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

    def model_kwargs(self) -> dict:
        """Keyword arguments for timm.create_model shared by teacher and student."""
        if self.input_size is None:
            return {}
        return {"pretrained_cfg_overlay": {"input_size": (3, self.input_size, self.input_size)}}


DEMO_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.yaml")


def parse_with_config(
    dataclass_types: tuple, argv: list[str] | None = None, default_config: str | None = None
) -> tuple:
    """Parse ``--config FILE.yaml`` (flat keys of the dataclasses; ``default_config`` when none is given), then the
    command line, which overrides it."""
    argv = sys.argv[1:] if argv is None else argv
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
    return tuple(parser.parse_args_into_dataclasses(rest)[: len(dataclass_types)])
