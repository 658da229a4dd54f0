"""Load an image-classification dataset from the Hub, a local folder or the built-in demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

from .columns import LABEL_COLUMNS, standardize_columns
from .digits import load_digits_dataset
from .fingerprint import canonical_source, dataset_fingerprint
from .image_splits import ImageSplits
from .split_info import SplitInfo

__all__ = ["BUILTIN_SOURCES", "EVAL_SPLIT_NAMES", "VALIDATION_SPLIT_NAMES", "load_held_out_split", "load_image_dataset"]

BUILTIN_SOURCES = ("builtin:digits",)
# The held-out split is "test" in CIFAR, "validation" in ImageNet-1k, "valid" in zh-plus/tiny-imagenet.
EVAL_SPLIT_NAMES = ("test", "validation", "valid", "val")
# A validation split besides the test split (an image folder's val/ loads as "validation").
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val")


def _load_hub(source: str) -> DatasetDict:
    try:
        loaded = datasets.load_dataset(source)
    except ConnectionError as err:
        raise ConnectionError(
            f"Could not load the Hub dataset {source!r} (no local folder has that name): the Hub is unreachable or "
            f"offline mode is on (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE). To use a local copy, run "
            f"datasets.load_dataset({source!r}).save_to_disk('DIR') where the Hub is reachable and pass source='DIR', "
            "or pass an image folder with train/ and test/ subfolders (one subfolder per class inside each)."
        ) from err
    except datasets.exceptions.DatasetNotFoundError as err:
        raise FileNotFoundError(
            f"source={source!r} is neither a local directory nor a dataset on the Hub. Pass a Hub dataset id "
            f"(e.g. 'uoft-cs/cifar100'), an existing directory, or one of {BUILTIN_SOURCES}."
        ) from err
    return loaded


def _load_local(path: Path) -> DatasetDict:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, Dataset):
            raise ValueError(
                f"source={str(path)!r} holds a single saved Dataset, with no train/test splits. Save a "
                "DatasetDict instead: DatasetDict(train=..., test=...).save_to_disk(DIR)."
            )
        return loaded
    # An image folder (train/ and test/ subfolders of class folders) or files load_dataset can read.
    _check_image_folder(path)
    return datasets.load_dataset(str(path))


def _check_image_folder(path: Path) -> None:
    """An image folder is ``<split>/<class>/<image>``. ``datasets``' imagefolder silently drops an empty class
    folder (a class the model would never see), does not follow a class folder that is a symbolic link, and
    mislabels an image outside a class folder or one level deeper; each is refused here, naming the path."""
    extensions = set(ImageFolder.EXTENSIONS)
    for split in sorted(p for p in _listed(path) if p.is_dir() and any(c.is_dir() for c in _listed(p))):
        classes = sorted(c.name for c in _listed(split) if c.is_dir())
        if len(classes) < 2:  # datasets then gives the split no label column at all
            raise ValueError(
                f"{split}: holds the class folder {classes} alone; a classifier needs at least 2 classes (an image "
                "folder is <split>/<class>/<image>, one folder per class)."
            )
        for item in sorted(_listed(split)):
            if item.is_file() and item.suffix.lower() in extensions:
                raise ValueError(
                    f"{item}: an image directly under {split.name}/, outside any class folder; move it into "
                    f"{split.name}/<class name>/ (an image folder is <split>/<class>/<image>)."
                )
            if not item.is_dir():
                continue
            if item.is_symlink():
                raise ValueError(
                    f"{item}: a class folder that is a symbolic link, which datasets' imagefolder does not follow (the "
                    "class would have no images); copy the folder, or make a real folder of links to its images."
                )
            nested = next((p for p in sorted(item.rglob("*")) if p.is_file() and p.parent != item
                           and p.suffix.lower() in extensions and not _hidden(p.relative_to(item))), None)
            if nested is not None:
                raise ValueError(
                    f"{nested}: an image in a subfolder of the class folder {split.name}/{item.name}/; put the images "
                    f"of a class directly in its folder (an image folder is <split>/<class>/<image>)."
                )
            if not any(p.is_file() and p.suffix.lower() in extensions for p in item.iterdir()):
                raise ValueError(
                    f"{item}: the class folder holds no image, so the class would be left out without a word; add "
                    "its images, or remove the folder."
                )


def _hidden(relative: Path) -> bool:
    """What ``datasets`` leaves out of a folder: hidden (``.ipynb_checkpoints``, ``.DS_Store``) and special
    (``__MACOSX``) files and folders, and anything inside them."""
    return any(part.startswith((".", "__")) for part in relative.parts)


def _listed(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not _hidden(Path(p.name))]


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1


def _pick_splits(
    loaded: DatasetDict, source: str, split: str | Mapping[str, str] | None, label_column: str | None
) -> tuple[dict[str, Dataset], dict[str, str]]:
    """The ``train`` and ``test`` datasets, and the source's names of those splits."""
    if isinstance(split, Mapping):
        wanted = dict(split)
        if not {"train", "test"} <= set(wanted) <= {"train", "test", "validation"}:
            raise ValueError(
                f"split={split!r}: a mapping must give the keys 'train' and 'test', and may give 'validation' (the "
                "source split to use for each)."
            )
    else:
        labelled = _labelled_held_out(loaded, label_column)
        test = split or next(iter(labelled), None)
        wanted = {"train": "train", "test": test}
        # a labelled validation split besides the test split: held-out data to choose settings on
        validation = next((s for s in VALIDATION_SPLIT_NAMES if s in labelled and s != test), None)
        if validation is not None:
            wanted["validation"] = validation
    roles: dict[str, list[str]] = {}
    for role, name in wanted.items():
        roles.setdefault(name, []).append(role)
    shared = {name: used for name, used in roles.items() if name is not None and len(used) > 1}
    if shared:
        name, used = next(iter(shared.items()))
        raise ValueError(
            f"the source split {name!r} of {source!r} would be the {' and the '.join(used)} split: a model scored "
            "or chosen on the images it trained on (or chosen on the test images) reports an accuracy no new image "
            "would give. Use a separate split for each (the recipes: --train_split, --test_split, --validation_split)."
        )
    missing = {k: v for k, v in wanted.items() if v is None or v not in loaded}
    if missing:
        roles = {"train": "training", "test": "held-out", "validation": "validation"}
        lacking = [f"no {roles[role]} split {name!r}" if name else
                   f"no labelled held-out split (looked for {list(EVAL_SPLIT_NAMES)})"
                   for role, name in missing.items()]
        raise ValueError(
            f"source={source!r} has splits {list(loaded)}: {', and '.join(lacking)}. Pass split=<the held-out "
            "split name> or split={'train': ..., 'test': ...} (the recipes: --test_split, and --train_split); an "
            "image folder needs train/ and test/ subfolders."
        )
    return {k: loaded[v] for k, v in wanted.items()}, wanted


def _labelled_held_out(loaded: DatasetDict, label_column: str | None) -> list[str]:
    """The splits of ``EVAL_SPLIT_NAMES`` that ``loaded`` has, labelled, in that order: the first is the held-out
    split when none is named."""
    return [s for s in EVAL_SPLIT_NAMES if s in loaded and _is_labelled(loaded[s], label_column)]


def _is_labelled(split: Dataset, label_column: str | None) -> bool:
    """False for held-out splits published without labels (ImageNet-1k's test split is all -1)."""
    names = [label_column] if label_column else LABEL_COLUMNS
    column = next((c for c in names if c in split.column_names), None)
    if column is None or len(split) == 0:
        return True
    values = split.select_columns([column]).with_format("arrow")[column]
    if not pa.types.is_integer(values.type):
        return True
    highest = pc.max(values).as_py()
    return highest is not None and highest >= 0


def _load_source(source: str | os.PathLike) -> tuple[DatasetDict, str]:
    """Every split of ``source``, and its kind: ``"builtin"``, ``"local"`` or ``"hub"``."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"source must be a Hub dataset id, a directory or one of {BUILTIN_SOURCES}, got {source!r}.")
    source = str(source)
    if source.startswith("builtin:"):
        if source not in BUILTIN_SOURCES:
            raise ValueError(f"source={source!r} is not a built-in dataset; built-in: {BUILTIN_SOURCES}.")
        return load_digits_dataset(), "builtin"
    if Path(source).expanduser().is_dir():
        return _load_local(Path(source).expanduser()), "local"
    if _looks_like_path(source) or Path(source).exists():
        raise FileNotFoundError(
            f"source={source!r} looks like a local path but is not a directory. Pass an image folder with "
            "train/ and test/ subfolders, a save_to_disk folder, a Hub dataset id or one of "
            f"{BUILTIN_SOURCES}."
        )
    return _load_hub(source), "hub"


def load_held_out_split(
    source: str | os.PathLike,
    *,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[Dataset, str, str]:
    """``source``'s labelled held-out split alone, with the columns ``image`` and ``label`` as in
    `load_image_dataset`, the source's canonical name and the split's name: what scoring a model needs when the
    model records its own training split, so the source needs none (an image folder may hold ``test/`` alone).

    ``split`` names the split, any one (``"train"`` too: a folder of class folders loads as ``train``); else the
    first of ``EVAL_SPLIT_NAMES`` present and labelled is taken.
    """
    loaded, kind = _load_source(source)
    name = split or next(iter(_labelled_held_out(loaded, label_column)), None)
    if name not in loaded:
        looked = [split] if split else list(EVAL_SPLIT_NAMES)
        raise ValueError(
            f"source={str(source)!r} has splits {list(loaded)}, none of them {looked}. Pass split=<the held-out split "
            "name> (the recipes: --test_split); a folder of class folders loads as the split 'train': name it so "
            "when the model never trained on those images."
        )
    held_out = standardize_columns({name: loaded[name]}, image_column=image_column, label_column=label_column)[name]
    return held_out, canonical_source(str(source), kind), name


def load_image_dataset(
    source: str | os.PathLike,
    *,
    split: str | Mapping[str, str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> ImageSplits:
    """An image-classification dataset as ``ImageSplits`` (a ``DatasetDict``) with splits ``train``, ``test`` and,
    when the source has a labelled one besides its test split, ``validation``; columns ``image`` (PIL images) and
    ``label`` (``ClassLabel`` with names). Its ``split_info`` records the training split's counts and where the rows
    came from: the model card names a Hub dataset only for a Hub source, and the held-out split by its real name.

    ``source`` is a Hub dataset id (``"uoft-cs/cifar100"``), a local directory (an image folder with
    ``train/`` and ``test/`` subfolders, or a ``DatasetDict.save_to_disk`` folder), or
    ``"builtin:digits"`` (scikit-learn's digits, no download). The held-out split is the first of
    ``EVAL_SPLIT_NAMES`` present and labelled; ``split`` names it instead, or maps both
    (``{"train": "train", "test": "validation"}``, optionally with ``"validation"``). Columns are detected unless
    named.
    """
    loaded, kind = _load_source(source)
    source = str(source)
    picked, split_names = _pick_splits(loaded, source, split, label_column)
    standard = standardize_columns(picked, image_column=image_column, label_column=label_column)
    train = SplitInfo.from_dataset(standard["train"])
    info = SplitInfo(train.class_counts, train.label_names, source=canonical_source(source, kind), source_kind=kind,
                     train_split=split_names["train"], test_split=split_names["test"],
                     fingerprint=dataset_fingerprint(loaded, source, kind))
    return ImageSplits(standard, info)
