"""The recipes' own arguments (besides `ltkd_hf.DistillationConfig`): dataclasses for ``HfArgumentParser``.

Which program takes which of them, and which stages each one reaches, is declared in `ltkd_hf.cli.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import NamedTuple

from timm.models import split_model_name_tag


@dataclass
class DataArguments:
    """Which data, and how it is made long-tailed."""

    dataset: str = field(
        default="builtin:digits",
        metadata={"help": "Hub dataset id, local imagefolder, save_to_disk folder, or builtin:digits (offline demo)."},
    )
    imbalance_factor: float = field(
        default=100.0, metadata={"help": "rho >= 1: class c keeps int(N_c * rho^(-c/(C-1))) of its N_c training "
                                 "images (n_max / n_min = rho on a balanced source); 1 keeps the split as it is."}
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
    validation_split: str | None = field(
        default=None,
        metadata={"help": "Validation split name, with --train_split/--test_split (default: detected: validation/"
                  "valid/val besides the test split, e.g. an image folder's val/)."},
    )
    validation_per_class: int | None = field(
        default=None,
        metadata={
            "help": "Hold out this many training images per class as a balanced validation split, before the "
            "long-tailed construction (seed --lt_seed), for a dataset without one. It changes the training split, "
            "so the paper's configs leave it off; the card says so when it is on."
        },
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected)."})
    split_manifest: list[str] | None = field(
        default=None,
        metadata={
            "help": "A benchmark's published long-tailed splits, as SPLIT=LIST_FILE (train=, test=, optional "
            "validation=): Liu et al.'s ImageNet-LT / Places-LT text lists or iNaturalist 2018's JSON annotations, "
            "with --dataset the image folder their paths are relative to. The training split is the list's own "
            "(--imbalance_factor 1, no long-tailed subsampling on top)."
        },
    )
    manifest_class_names: str | None = field(
        default=None,
        metadata={"help": "With --split_manifest text lists: a file with one class name per line (class i on line i+1)."},
    )

    def manifests(self) -> dict[str, str] | None:
        """--split_manifest as ``{split: list file}``, or None."""
        if not self.split_manifest:
            return None
        pairs = [entry.partition("=") for entry in self.split_manifest]
        bad = [entry for entry, (split, eq, path) in zip(self.split_manifest, pairs) if not (split and eq and path)]
        if bad:
            raise ValueError(
                f"--split_manifest {' '.join(bad)}: write SPLIT=LIST_FILE (train=..., test=..., optional validation=...)."
            )
        return {split: path for split, _, path in pairs}

    def __post_init__(self) -> None:
        if self.validation_per_class is not None and self.validation_per_class < 1:
            raise ValueError(f"--validation_per_class {self.validation_per_class}: hold out at least 1 image per class, "
                             "or none.")
        if self.validation_split is not None and self.train_split is None:
            raise ValueError(f"--validation_split {self.validation_split!r} goes with --train_split and --test_split "
                             "(without them the validation split is detected).")
        if self.split_manifest:
            self.manifests()
            if self.train_split or self.test_split:
                raise ValueError("--split_manifest names the splits itself; drop --train_split / --test_split.")
        elif self.manifest_class_names:
            raise ValueError("--manifest_class_names names the classes of --split_manifest text lists; pass both.")
        if not self.imbalance_factor >= 1:
            raise ValueError(
                f"--imbalance_factor {self.imbalance_factor}: rho = n_max / n_min must be >= 1 (1 keeps the training "
                "split as it is)."
            )
        self._refuse_idle_construction()
        for name in ("lt_seed", "class_order_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**32:
                raise ValueError(f"--{name} {value}: a seed of numpy's legacy generator must be in 0..2**32 - 1.")
        if self.lt_profile not in ("exp", "step"):
            raise ValueError(f"--lt_profile {self.lt_profile!r}: choose exp or step.")
        if self.lt_exponent not in ("standard", "paper"):
            raise ValueError(f"--lt_exponent {self.lt_exponent!r}: choose standard (c/(C-1)) or paper (c/C).")
        if self.lt_profile == "step" and self.lt_exponent != "standard":
            raise ValueError(
                f"--lt_exponent {self.lt_exponent}: the step profile has no exponent (a class keeps n_c or n_c / rho); "
                "drop it, or use --lt_profile exp."
            )

    def _refuse_idle_construction(self) -> None:
        """Refuse the long-tail construction's flags where no construction runs: a --split_manifest's lists are the
        published split as it is, and --imbalance_factor 1 keeps every image whatever the profile, exponent or class
        order (--lt_seed still orders the rows there, and so the batches)."""
        default = {f.name: f.default for f in fields(self)}
        idle = [f"--{name} {getattr(self, name)}" for name in ("lt_profile", "lt_exponent", "class_order_seed")
                if getattr(self, name) != default[name]]
        if self.split_manifest:
            if self.imbalance_factor != 1:
                idle.insert(0, f"--imbalance_factor {self.imbalance_factor:g} -> 1")
            if self.lt_seed != default["lt_seed"] and not self.validation_per_class:  # it draws no rows from the lists
                idle.append(f"--lt_seed {self.lt_seed}")
            if idle:
                raise ValueError("--split_manifest: the lists are the long-tailed split already; drop the long-tail "
                                 f"construction ({', '.join(idle)}).")
        elif self.imbalance_factor == 1 and idle:
            raise ValueError(
                f"{idle[0]}: with --imbalance_factor 1 every class keeps all its training images, so the long tail's "
                "shape (--lt_profile, --lt_exponent, --class_order_seed) changes nothing; drop it, or pass "
                "--imbalance_factor > 1 to make the training split long-tailed."
            )


class ModelSource(NamedTuple):
    """A model to build: the flag that named it (for messages), its timm source, and whether to load its weights."""

    flag: str
    source: str
    pretrained: bool


_CHECKPOINT_PREFIXES = ("local-dir:", "hf-hub:", "hf_hub:")


def _refuse_weights_tag(flag: str, name: str, init_flag: str) -> None:
    """An architecture flag names no weights: a timm name's pretrained tag (``resnet18.a1_in1k``) would be dropped."""
    architecture, tag = split_model_name_tag(name)
    if tag:
        raise ValueError(
            f"{flag} {name}: the tag {tag!r} names pretrained weights, but {flag} builds the architecture from its "
            f"own initialisation; pass {init_flag} {name} to start from those weights, or {flag} {architecture}."
        )


@dataclass
class StudentArguments:
    """The student: the distilled one and the ones it is compared with (cross-entropy alone, plain KD)."""

    student: str = field(
        default="cifar_wrn_40_1",
        metadata={"help": "timm architecture of the student, trained from its initialisation (see --student_init)."},
    )
    student_init: str | None = field(
        default=None,
        metadata={
            "help": "Start the student (and the cross-entropy student) from this checkpoint (timm name with a "
            "pretrained tag such as resnet18.a1_in1k, hf-hub:org/name or local-dir:/path; safetensors only): its "
            "backbone, a new head for the dataset's classes. Replaces --student."
        },
    )
    compare_ce_student: bool = field(
        default=True, metadata={"help": "Also train the student with cross-entropy alone, for the comparison table; "
                                "with --distill_loss ce the student is that row."}
    )
    compare_kd_student: bool = field(
        default=False,
        metadata={
            "help": "Also distil the student with plain KD (its settings: the config's methods.kd, else KD's "
            "defaults) from the same teacher, with the distilled student's schedule and warm-up, for the comparison "
            "table (the question LTKD answers: why not KD?). On in the demo; with --distill_loss kd the distilled "
            "student is that row."
        },
    )

    def __post_init__(self) -> None:
        if self.student.startswith(_CHECKPOINT_PREFIXES):
            raise ValueError(
                f"--student {self.student!r} is a checkpoint, but --student names an architecture trained from its "
                f"initialisation; pass --student_init {self.student} to start from these weights."
            )
        _refuse_weights_tag("--student", self.student, "--student_init")

    def student_source(self) -> ModelSource:
        """What the student stages build: a checkpoint with --student_init, else --student."""
        if self.student_init:
            return ModelSource("--student_init", self.student_init, pretrained=True)
        return ModelSource("--student", self.student, pretrained=False)


@dataclass
class TeacherArguments:
    """The biased teacher trained here: plain cross-entropy on the long-tailed split, with its own schedule."""

    teacher_architecture: str = field(
        default="cifar_resnet8x4",
        metadata={"help": "timm architecture of the teacher trained here (see --teacher_init)."},
    )
    teacher_init: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune the biased teacher from this checkpoint (timm name with a pretrained tag such as "
            "resnet50.a1_in1k, hf-hub:org/name or local-dir:/path; safetensors only): its backbone, a new head for "
            "the dataset's classes. Replaces --teacher_architecture."
        },
    )
    teacher_epochs: float = field(default=30.0, metadata={"help": "Epochs of the teacher's training run."})
    teacher_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the teacher's training run (default: --learning_rate)."}
    )
    teacher_logit_adjustment: float = field(
        default=0.0,
        metadata={
            "help": "tau of the teacher's logit-adjusted cross-entropy: 0 = plain cross-entropy (the biased teacher "
            "of the paper), 1 = balanced softmax (a 'fixed' teacher). The student's own objective (--ce_weight, "
            "--ce_logit_adjustment, --label_smoothing_factor, the loss) never applies to the teacher."
        },
    )

    def __post_init__(self) -> None:
        if not self.teacher_epochs > 0:
            raise ValueError(f"--teacher_epochs {self.teacher_epochs}: the teacher needs > 0 epochs of training.")
        if self.teacher_learning_rate is not None and not self.teacher_learning_rate >= 0:
            raise ValueError(f"--teacher_learning_rate {self.teacher_learning_rate}: pass a learning rate >= 0.")
        if not self.teacher_logit_adjustment >= 0:
            raise ValueError(f"--teacher_logit_adjustment {self.teacher_logit_adjustment}: tau must be >= 0.")
        if self.teacher_architecture.startswith(_CHECKPOINT_PREFIXES):
            raise ValueError(
                f"--teacher_architecture {self.teacher_architecture!r} is a checkpoint; pass --teacher_init "
                f"{self.teacher_architecture} to fine-tune from it, or --teacher {self.teacher_architecture} to "
                "distil from it as it is."
            )
        _refuse_weights_tag("--teacher_architecture", self.teacher_architecture, "--teacher_init")

    def teacher_source(self) -> ModelSource:
        """What the teacher stage builds: a checkpoint with --teacher_init, else --teacher_architecture."""
        if self.teacher_init:
            return ModelSource("--teacher_init", self.teacher_init, pretrained=True)
        return ModelSource("--teacher_architecture", self.teacher_architecture, pretrained=False)


@dataclass
class GivenTeacherArguments:
    """A finished teacher to distil from, instead of training one here."""

    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Teacher: timm name (+ --teacher_checkpoint), local-dir:/hf-hub: spec or a saved folder. "
            "Default: train a biased teacher with cross-entropy on the same long-tailed split first."
        },
    )
    teacher_checkpoint: str | None = field(default=None, metadata={"help": "A .safetensors state dict for --teacher."})
    allow_unsafe_pickle: bool = field(
        default=False,
        metadata={"help": "Allow a pickled (.pt/.pth/.bin) teacher checkpoint. Only for files you trust."},
    )

    def __post_init__(self) -> None:
        if self.allow_unsafe_pickle and self.teacher is None:
            raise ValueError(
                "--allow_unsafe_pickle true: it lets --teacher load a pickled checkpoint, but there is no --teacher (a "
                "teacher is trained here); drop it."
            )
        if self.teacher_checkpoint is not None and self.teacher is None:
            raise ValueError(
                f"--teacher_checkpoint {self.teacher_checkpoint!r} needs --teacher <architecture name> (the model the "
                "weights belong to); without --teacher a teacher is trained here and the checkpoint would be ignored."
            )


@dataclass
class InputArguments:
    """The input size every model of the run reads."""

    input_size: int | None = field(
        default=None,
        metadata={
            "help": "Train and evaluate at this square input size instead of the architectures' own "
            "(e.g. 64 for TinyImageNet with the CIFAR architectures)."
        },
    )

    def __post_init__(self) -> None:
        if self.input_size is not None and self.input_size < 8:
            raise ValueError(f"--input_size {self.input_size}: pass a side of at least 8 pixels, or none.")

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
        metadata={"help": "Decode every image of the long-tailed training split and the held-out splits before "
                  "training, naming any corrupt file, and warn about held-out images that are copies of training "
                  "images."},
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
    dry_run: bool = field(
        default=False,
        metadata={"help": "Print every stage with its fully resolved settings and what would happen to it; train nothing."},
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
        default = next(f.default for f in fields(self) if f.name == "in_memory_max_gib")
        if not self.in_memory_data and self.in_memory_max_gib != default:
            raise ValueError(
                f"--in_memory_max_gib {self.in_memory_max_gib:g} bounds the splits of --in_memory_data true, which is "
                "off; pass --in_memory_data true, or drop it."
            )


