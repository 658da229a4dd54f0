"""The published long-tailed benchmarks' own splits, read from their list files against a local image folder.

ImageNet-LT and Places-LT (Liu et al., 2019) ship one text list per split (``ImageNet_LT_train.txt``,
``..._val.txt``, ``..._test.txt``), each line ``<image path relative to the image folder> <class index>``.
iNaturalist 2018 ships COCO-style JSON (``train2018.json``, ``val2018.json``): ``images`` (``id``,
``file_name``), ``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``, ``name``). These
lists *are* the long-tailed splits, so they are used as they are: no long-tailed subsampling on top.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image

from .fingerprint import file_fingerprint
from .image_splits import ImageSplits
from .split_info import SplitInfo

__all__ = ["MANIFEST_SPLITS", "MANIFEST_FORMATS", "load_split_manifest"]

MANIFEST_SPLITS = ("train", "validation", "test")
"""The splits a manifest set may name, in the order of the returned ``ImageSplits``; train and test are required."""

MANIFEST_FORMATS = {".txt": "text list (ImageNet-LT, Places-LT)", ".json": "COCO-style JSON (iNaturalist 2018)"}
"""File suffix -> manifest format."""


@dataclass(frozen=True)
class _Manifest:
    """One split's list: image paths relative to the image folder and class indices, with where each came from."""

    argument: str
    path: Path
    files: list[str]
    labels: list[int]
    lines: list[int] | None  # a text list's line number of each entry; None for JSON (entry i is images[i])
    class_names: list[str] | None  # the JSON categories' names, class-index order

    def where(self, i: int) -> str:
        entry = f"line {self.lines[i]}" if self.lines is not None else f"images[{i}]"
        return f"{self.argument}={str(self.path)!r} {entry}"


def _read_text_list(argument: str, path: Path) -> _Manifest:
    files, labels, lines = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:  # a blank line (the file's last newline) names no image
                continue
            # The label is the last field; the path before it may hold spaces.
            parts = text.rsplit(maxsplit=1)
            try:
                label = int(parts[1]) if len(parts) == 2 else None
            except ValueError:
                label = None
            if label is None or label < 0:
                raise ValueError(
                    f"{argument}={str(path)!r} line {number}: expected '<image path> <class index>' with a class "
                    f"index >= 0, got {text!r}."
                )
            files.append(parts[0])
            labels.append(label)
            lines.append(number)
    if not files:
        raise ValueError(f"{argument}={str(path)!r} lists no image; pass the split's list file.")
    return _Manifest(argument, path, files, labels, lines, None)


def _repeated(names: Sequence[str]) -> list[str]:
    return sorted(name for name, times in Counter(names).items() if times > 1)


def _field(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{where} has no {key!r} field; each entry needs one, as in iNaturalist 2018's JSON files.")
    return record[key]


def _read_coco_json(argument: str, path: Path) -> _Manifest:
    name = f"{argument}={str(path)!r}"
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} is not valid JSON ({err}).") from err
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(
            f"{name} lacks {missing}; a JSON manifest holds 'images' [{{id, file_name}}], 'annotations' "
            "[{image_id, category_id}] and 'categories' [{id, name}], as iNaturalist 2018's train2018.json."
        )
    categories = sorted(
        data["categories"], key=lambda c: _field(c, "id", f"{name} categories entry {c!r}")
    )
    index = {c["id"]: i for i, c in enumerate(categories)}
    if len(index) != len(categories):
        raise ValueError(f"{name}: two categories share an id; each category needs its own id.")
    label_of: dict[Any, int] = {}
    for i, annotation in enumerate(data["annotations"]):
        where = f"{name} annotations[{i}]"
        image_id, category = _field(annotation, "image_id", where), _field(annotation, "category_id", where)
        if category not in index:
            span = f" (ids {categories[0]['id']}..{categories[-1]['id']})" if categories else ""
            raise ValueError(f"{where}: category_id {category!r} is not one of the file's {len(index)} categories{span}.")
        if image_id in label_of:
            raise ValueError(f"{where}: image {image_id!r} has a second annotation; classification needs one per image.")
        label_of[image_id] = index[category]
    files, labels = [], []
    for i, image in enumerate(data["images"]):
        where = f"{name} images[{i}]"
        image_id, file_name = _field(image, "id", where), _field(image, "file_name", where)
        if image_id not in label_of:
            raise ValueError(
                f"{where} (id {image_id!r}, {file_name!r}) has no annotation, so no label. Every image of a split "
                "needs one: iNaturalist 2018's test2018.json is unlabelled, so evaluate on val2018.json (as the "
                "literature does)."
            )
        files.append(file_name)
        labels.append(label_of.pop(image_id))
    if label_of:
        raise ValueError(f"{name}: annotations name images {sorted(label_of, key=str)[:10]} that 'images' lacks.")
    if not files:
        raise ValueError(f"{name} lists no image; pass the split's annotation file.")
    names = [str(_field(c, "name", f"{name} category {c['id']!r}")) for c in categories]
    return _Manifest(argument, path, files, labels, None, names)


def _read(split: str, path: str | os.PathLike) -> _Manifest:
    argument = f"manifests[{split!r}]"
    file = Path(path).expanduser()
    if file.suffix.lower() not in MANIFEST_FORMATS:
        raise ValueError(
            f"{argument}={str(path)!r} has an unknown format; expected one of {MANIFEST_FORMATS} by its suffix."
        )
    if not file.is_file():
        raise FileNotFoundError(f"{argument}={str(path)!r} is not a file; pass the path of the split's list.")
    reader = _read_text_list if file.suffix.lower() == ".txt" else _read_coco_json
    return reader(argument, file)


def _read_class_names(class_names: str | os.PathLike | Sequence[str]) -> list[str]:
    if isinstance(class_names, (str, os.PathLike)):
        path = Path(class_names).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"class_names={str(class_names)!r} is not a file; pass one class name per line.")
        names = path.read_text(encoding="utf-8").splitlines()
        while names and not names[-1].strip():
            names.pop()
        empty = [n for n, name in enumerate(names, start=1) if not name.strip()]
        if empty:
            raise ValueError(f"class_names={str(class_names)!r} line {empty[0]} is empty; line i names class i - 1.")
        names = [name.strip() for name in names]
    else:
        names = [str(name) for name in class_names]
    if not names or _repeated(names):
        raise ValueError(
            f"class_names must name each class once, got {len(names)} names (repeated: {_repeated(names)[:10]})."
        )
    return names


def _class_names(manifests: Mapping[str, _Manifest], class_names: Any) -> list[str]:
    """The class names: the JSON categories', the given ones, or the class indices as strings."""
    first = next(iter(manifests.values()))
    if first.class_names is not None:
        if class_names is not None:
            raise ValueError("class_names is for text lists; a JSON manifest names its classes in 'categories'.")
        for manifest in manifests.values():
            if manifest.class_names != first.class_names:
                raise ValueError(
                    f"{manifest.argument}={str(manifest.path)!r} has other categories than "
                    f"{first.argument}={str(first.path)!r}; every split must list the same categories."
                )
        if _repeated(first.class_names):
            raise ValueError(
                f"{first.argument}={str(first.path)!r}: categories share the names {_repeated(first.class_names)[:10]}; "
                "each class needs its own name."
            )
        return first.class_names
    if class_names is not None:
        names = _read_class_names(class_names)
        for manifest in manifests.values():
            bad = next((i for i, label in enumerate(manifest.labels) if label >= len(names)), None)
            if bad is not None:
                raise ValueError(
                    f"{manifest.where(bad)}: class index {manifest.labels[bad]} is out of range: class_names names "
                    f"{len(names)} classes (0..{len(names) - 1})."
                )
        return names
    return [str(c) for c in range(max(max(m.labels) for m in manifests.values()) + 1)]


def _check_training_images(manifests: Mapping[str, _Manifest], names: list[str]) -> None:
    train = manifests["train"]
    counts = np.bincount(np.asarray(train.labels), minlength=len(names))
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        first = empty[0]
        used = next(
            (m.where(m.labels.index(first)) for m in manifests.values() if m is not train and first in m.labels), None
        )
        raise ValueError(
            f"{train.argument}={str(train.path)!r} has no image of classes {empty[:10]} (names "
            f"{[names[c] for c in empty[:10]]}){f'; class {first} is used on {used}' if used else ''}. Every class "
            "needs a training image: check the class indices, or pass the training list that goes with the others."
        )


def _check_images(manifest: _Manifest, root: Path) -> list[str]:
    """The images' full paths; a FileNotFoundError naming the first missing one's line."""
    paths = [os.path.join(root, file) for file in manifest.files]
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
    if missing:
        i = missing[0]
        raise FileNotFoundError(
            f"{manifest.where(i)}: image {manifest.files[i]!r} is not a file under image_root={str(root)!r} "
            f"({len(missing)} of the list's {len(paths)} images are missing). Pass as image_root the folder the "
            "list's paths are relative to."
        )
    return paths


def load_split_manifest(
    manifests: Mapping[str, str | os.PathLike],
    image_root: str | os.PathLike,
    *,
    class_names: str | os.PathLike | Sequence[str] | None = None,
) -> ImageSplits:
    """A benchmark's published splits as ``ImageSplits`` ("train", "validation" when given, "test") with
    columns ``image`` (``datasets.Image``, read lazily from the files) and ``label`` (one ``ClassLabel``).

    ``manifests`` maps "train", "test" and optionally "validation" to a list file: a ``.txt`` text list (one
    ``<image path> <class index>`` per line, as Liu et al.'s ``ImageNet_LT_train.txt``) or a ``.json`` COCO-style
    annotation file (iNaturalist 2018's ``train2018.json``; evaluate on ``val2018.json``). Image paths are relative
    to ``image_root``. The training split keeps the list's own class counts. Class names: the JSON categories'
    ``name`` (class ``i`` is the category with the ``i``-th smallest id: iNaturalist's 0..8141 stay as they are);
    for text lists ``class_names`` (a file with one name per line, or a sequence) or else the class indices as
    strings. Its ``split_info`` records where the splits came from: the image folder as ``source``,
    ``source_kind="manifest"`` and the list files' names as split names.

    Raises FileNotFoundError for a missing list or image (naming its line, or its ``images[i]`` entry) and
    ValueError for a malformed line or entry, a class index out of range, a class without training images, an
    unknown suffix, or a split other than train / validation / test.
    """
    unknown = [split for split in manifests if split not in MANIFEST_SPLITS]
    if unknown or not {"train", "test"} <= set(manifests):
        raise ValueError(
            f"manifests must map 'train', 'test' and optionally 'validation' to list files, got {sorted(manifests)}"
            f"{f' ({unknown} unknown)' if unknown else ''}."
        )
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"image_root={str(image_root)!r} is not a folder; pass the folder the manifests' image paths are relative to."
        )
    read = {split: _read(split, manifests[split]) for split in MANIFEST_SPLITS if split in manifests}
    suffixes = {split: manifest.path.suffix.lower() for split, manifest in read.items()}
    if len(set(suffixes.values())) > 1:
        raise ValueError(f"manifests mix formats {suffixes}; pass every split in one format.")
    names = _class_names(read, class_names)
    _check_training_images(read, names)
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    splits = {
        split: Dataset.from_dict({"image": _check_images(manifest, root), "label": manifest.labels}, features=features)
        for split, manifest in read.items()
    }
    info = SplitInfo(
        SplitInfo.from_dataset(splits["train"]).class_counts, names, source=str(root.resolve()),
        source_kind="manifest", train_split=read["train"].path.name, test_split=read["test"].path.name,
        # what the split is: the list files (the images are the ones they name; an image edited in place keeps it)
        fingerprint="lists:" + ",".join(file_fingerprint(read[split].path) for split in sorted(read)),
    )
    return ImageSplits(splits, info)
