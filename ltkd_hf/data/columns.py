"""Find the image and label columns of a dataset and standardise them to ``image`` and ``label``."""

from __future__ import annotations

from typing import Sequence

import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict, Image, Value

__all__ = ["IMAGE_COLUMNS", "LABEL_COLUMNS", "detect_columns", "standardize_columns"]

# Names used by the Hub image-classification datasets (CIFAR uses img / fine_label, ImageNet image / label).
IMAGE_COLUMNS = ("image", "img", "pixel_values", "images", "picture", "photo", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "class_label", "target", "targets", "category")


def _pick(dataset: Dataset, kind: str, argument: str, names: Sequence[str], feature_type: type) -> str:
    columns = dataset.column_names
    by_name = [c for c in names if c in columns]
    if len(by_name) == 1:
        return by_name[0]
    if not by_name:
        by_type = [c for c in columns if isinstance(dataset.features[c], feature_type)]
        if len(by_type) == 1:
            return by_type[0]
        candidates = by_type
    else:
        candidates = by_name
    problem = (
        f"several could be the {kind} column: {candidates}" if candidates else f"none looks like the {kind} column"
    )
    raise ValueError(
        f"Cannot tell the {kind} column: the dataset has columns {columns} and {problem}. "
        f"Pass {argument}=<column name>."
    )


def detect_columns(
    dataset: Dataset, *, image_column: str | None = None, label_column: str | None = None
) -> tuple[str, str]:
    """``(image_column, label_column)`` of ``dataset``: the given names, checked, or detected.

    Detection takes the one column named like an image (``IMAGE_COLUMNS``) / a label (``LABEL_COLUMNS``);
    when no name matches, the one column of type ``datasets.Image`` / ``ClassLabel``. Anything else is
    an error listing the columns.
    """
    for argument, value in (("image_column", image_column), ("label_column", label_column)):
        if value is not None and value not in dataset.column_names:
            raise ValueError(
                f"{argument}={value!r} is not a column of the dataset (columns: {dataset.column_names})."
            )
    image = image_column or _pick(dataset, "image", "image_column", IMAGE_COLUMNS, Image)
    label = label_column or _pick(dataset, "label", "label_column", LABEL_COLUMNS, ClassLabel)
    return image, label


def _unique(split: Dataset, column: str) -> list:
    return pc.unique(split.select_columns([column]).with_format("arrow")[column]).to_pylist()


def _reference(splits: dict[str, Dataset]) -> Dataset:
    """The split whose columns and classes the others must share: ``train``, or a held-out split loaded alone."""
    return splits["train"] if "train" in splits else next(iter(splits.values()))


def _class_label(splits: dict[str, Dataset], label: str) -> ClassLabel:
    """One ClassLabel for every split: the reference split's (`_reference`), or built from the values of all
    splits."""
    feature = _reference(splits).features[label]
    if isinstance(feature, ClassLabel):
        for name, split in splits.items():
            other = split.features[label]
            if isinstance(other, ClassLabel) and other.names != feature.names:
                raise ValueError(
                    f"split {name!r} names its classes {other.names[:10]}... but 'train' names them "
                    f"{feature.names[:10]}...; both splits must use the same ClassLabel."
                )
        return feature
    if not _is_integer(feature) and not (isinstance(feature, Value) and feature.dtype == "string"):
        raise ValueError(
            f"label column {label!r} has type {feature}; expected ClassLabel, integers or strings. Pass "
            "label_column=<the column holding each image's class>."
        )
    values = sorted({v for split in splits.values() for v in _unique(split, label) if v is not None})
    if not _is_integer(feature):
        return ClassLabel(names=[str(v) for v in values])
    negative = [v for v in values if v < 0]
    if negative:
        raise ValueError(
            f"label column {label!r} holds negative class ids {negative[:5]} (unlabelled rows?); drop those rows "
            f"first, e.g. dataset.filter(lambda row: row[{label!r}] >= 0)."
        )
    named = {tuple(split.features[label].names) for split in splits.values()
             if isinstance(split.features[label], ClassLabel)}
    if len(named) == 1 and values[-1] < len(next(iter(named))):  # the ids index another split's named classes
        return ClassLabel(names=list(next(iter(named))))
    # ids 0..C-1 are the class indices; other ids (3, 7, 12, 40) are names, in numeric order
    return ClassLabel(names=[str(v) for v in values])


def _is_integer(feature) -> bool:
    return isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))


def standardize_columns(
    splits: dict[str, Dataset], *, image_column: str | None = None, label_column: str | None = None
) -> DatasetDict:
    """The splits reduced to the columns ``image`` (``datasets.Image``) and ``label`` (one ``ClassLabel``
    with names, shared by all splits); other columns are dropped."""
    image, label = detect_columns(_reference(splits), image_column=image_column, label_column=label_column)
    for name, split in splits.items():
        missing = [c for c in (image, label) if c not in split.column_names]
        if missing:
            raise ValueError(f"split {name!r} lacks columns {missing} (it has {split.column_names}).")
        if not isinstance(split.features[image], Image):
            raise ValueError(
                f"image column {image!r} of split {name!r} has type {split.features[image]}, expected "
                f"datasets.Image; cast it with dataset.cast_column({image!r}, datasets.Image()) or pass "
                "image_column=<the column holding the images>."
            )
    class_label = _class_label(splits, label)
    if class_label.num_classes < 2:
        raise ValueError(
            f"label column {label!r} holds {class_label.num_classes} class {class_label.names}: a classifier needs at "
            "least 2 (in an image folder, one subfolder per class); if another column holds each image's class, pass "
            "label_column=<that column>."
        )
    ids_are_names = class_label.names != [str(i) for i in range(class_label.num_classes)]  # not 0..C-1
    out = {}
    for name, split in splits.items():
        split = split.select_columns([image, label])
        if _is_integer(split.features[label]) and ids_are_names:
            split = split.cast_column(label, Value("string"))  # mapped by name
        if split.features[label] != class_label:
            try:
                split = split.cast_column(label, class_label)
            except ValueError as err:  # datasets: "Invalid string class label kiwi"
                raise ValueError(
                    f"split {name!r}: {err}; its labels must be among the {class_label.num_classes} classes the "
                    f"training split names ({class_label.names[:10]}{'...' if class_label.num_classes > 10 else ''})."
                ) from None
        renames = {old: new for old, new in ((image, "image"), (label, "label")) if old != new}
        out[name] = split.rename_columns(renames) if renames else split
    return DatasetDict(out)
