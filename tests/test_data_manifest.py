"""Benchmark splits from their list files: Liu et al.'s text lists and iNaturalist's COCO-style JSON, read
against an image folder with the lists' own class counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltkd_hf import ClassGroups, SplitInfo
from ltkd_hf.data import get_class_counts, load_split_manifest

# Training images per class: one class in each of many (> 100), medium (20..100) and few (< 20) shots.
TRAIN_COUNTS = (120, 30, 5)
HELD_OUT = {"validation": 2, "test": 3}  # images per class: balanced, as the benchmarks' val / test lists


def write_png(path: Path, value: int) -> None:
    """A 2x2 image whose every pixel is ``value``, so a loaded row tells which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((2, 2, 3), value, dtype=np.uint8)).save(path)


def entries(split: str, counts) -> list[tuple[str, int, int]]:
    """(relative path, class, pixel value) of each image of a split; the value is unique per image."""
    out = []
    for label, count in enumerate(counts):
        for i in range(count):
            out.append((f"{split}/n{label:03d}/img {i}.png", label, len(out) % 256))  # a space, as real paths may hold
    return out


@pytest.fixture()
def benchmark(tmp_path):
    """An image root and ImageNet-LT style lists: train 120 / 30 / 5, val 2 and test 3 per class."""
    root = tmp_path / "images"
    lists = tmp_path / "lists"
    lists.mkdir()
    files = {}
    splits = {"train": TRAIN_COUNTS, **{s: [n] * len(TRAIN_COUNTS) for s, n in HELD_OUT.items()}}
    for split, counts in splits.items():
        rows = entries(split, counts)
        for rel, _, value in rows:
            write_png(root / rel, value)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(rows))  # the published lists are not sorted by class
        file = lists / f"Tiny_LT_{'val' if split == 'validation' else split}.txt"
        file.write_text("".join(f"{rows[i][0]} {rows[i][1]}\n" for i in order), encoding="utf-8")
        files[split] = (file, [rows[i] for i in order])
    return root, files


def test_text_lists_load_with_their_own_counts(benchmark):
    root, files = benchmark
    splits = load_split_manifest({s: f for s, (f, _) in files.items()}, root)
    assert list(splits) == ["train", "validation", "test"]
    assert get_class_counts(splits["train"]) == list(TRAIN_COUNTS)
    assert get_class_counts(splits["validation"]) == [2, 2, 2] and get_class_counts(splits["test"]) == [3, 3, 3]
    assert splits["train"].features["label"].names == ["0", "1", "2"]
    # Each row is the listed file with the listed label, in list order.
    for split, (_, rows) in files.items():
        for k in (0, len(rows) // 2, len(rows) - 1):
            row = splits[split][k]
            assert row["label"] == rows[k][1]
            assert np.asarray(row["image"]).tolist() == np.full((2, 2, 3), rows[k][2]).tolist()

    info = splits.split_info
    assert info.class_counts == TRAIN_COUNTS and info.long_tail is None  # no long-tailed construction on top
    assert info.source == str(root.resolve()) and info.source_kind == "manifest"
    assert info.train_split == "Tiny_LT_train.txt" and info.test_split == "Tiny_LT_test.txt"
    assert info.describe() == "the published long-tailed split Tiny_LT_train.txt (its own class counts, no subsampling)"
    assert ClassGroups.by_threshold(info.class_counts).names == ("many", "medium", "few")


def test_class_names_from_a_file_or_a_list(benchmark, tmp_path):
    root, files = benchmark
    manifests = {"train": files["train"][0], "test": files["test"][0]}
    names_file = tmp_path / "names.txt"
    names_file.write_text("tench\ngoldfish fish\nshark\n\n", encoding="utf-8")
    splits = load_split_manifest(manifests, root, class_names=names_file)
    assert list(splits) == ["train", "test"]
    assert splits["test"].features["label"].names == ["tench", "goldfish fish", "shark"]
    assert load_split_manifest(manifests, root, class_names=("a", "b", "c"))["train"].features["label"].names == [
        "a", "b", "c"]


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_text_list_errors_name_the_line(benchmark, tmp_path):
    root, files = benchmark
    train, test = files["train"][0], files["test"][0]
    good = train.read_text().splitlines()

    broken = write_lines(tmp_path / "missing.txt", good[:6] + ["train/n000/absent.png 0"] + good[6:])
    with pytest.raises(FileNotFoundError, match=r"manifests\['train'\]=.*missing.txt' line 7: image "
                                                r"'train/n000/absent.png' is not a file under image_root=.*"
                                                r"\(1 of the list's 156 images are missing\)"):
        load_split_manifest({"train": broken, "test": test}, root)

    malformed = write_lines(tmp_path / "malformed.txt", good[:2] + ["train/n000/img 0.png zero"])
    with pytest.raises(ValueError, match=r"malformed.txt' line 3: expected '<image path> <class index>'"):
        load_split_manifest({"train": malformed, "test": test}, root)
    negative = write_lines(tmp_path / "negative.txt", ["train/n000/img 0.png -1"])
    with pytest.raises(ValueError, match=r"negative.txt' line 1: .*class index >= 0"):
        load_split_manifest({"train": negative, "test": test}, root)

    first = next(n for n, line in enumerate(good, start=1) if line.endswith(" 2"))
    with pytest.raises(ValueError, match=rf"manifests\['train'\]=.* line {first}: class index 2 is out of range: "
                                         r"class_names names 2 classes \(0..1\)"):
        load_split_manifest({"train": train, "test": test}, root, class_names=["a", "b"])

    # The test list uses class 3, which has no training image (a typo'd label, or lists of two benchmarks).
    stray = write_lines(tmp_path / "stray.txt", test.read_text().splitlines() + ["test/n000/img 0.png 3"])
    with pytest.raises(ValueError, match=r"manifests\['train'\]=.* has no image of classes \[3\] \(names \['3'\]\); "
                                         r"class 3 is used on manifests\['test'\]=.*stray.txt' line 10"):
        load_split_manifest({"train": train, "test": stray}, root)


def test_argument_errors(benchmark, tmp_path):
    root, files = benchmark
    train, test = files["train"][0], files["test"][0]
    with pytest.raises(ValueError, match=r"must map 'train', 'test' and optionally 'validation'.*\['train'\]"):
        load_split_manifest({"train": train}, root)
    with pytest.raises(ValueError, match=r"\(\['val'\] unknown\)"):
        load_split_manifest({"train": train, "test": test, "val": test}, root)
    with pytest.raises(FileNotFoundError, match="image_root='.*nowhere' is not a folder"):
        load_split_manifest({"train": train, "test": test}, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"manifests\['test'\]='.*absent.txt' is not a file"):
        load_split_manifest({"train": train, "test": tmp_path / "absent.txt"}, root)
    csv = write_lines(tmp_path / "train.csv", ["a,0"])
    with pytest.raises(ValueError, match=r"manifests\['train'\]='.*train.csv' has an unknown format; expected one "
                                         r"of .*'.txt'.*'.json'"):
        load_split_manifest({"train": csv, "test": test}, root)
    with pytest.raises(ValueError, match="lists no image"):
        load_split_manifest({"train": write_lines(tmp_path / "empty.txt", []), "test": test}, root)
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        load_split_manifest({"train": train, "test": test}, root, class_names=["a", "b", "a"])


# -- iNaturalist 2018's COCO-style JSON ------------------------------------------------------------------
CATEGORIES = [{"id": 7, "name": "Aves sp.", "supercategory": "Aves"}, {"id": 2, "name": "Plantae sp."},
              {"id": 40, "name": "Fungi sp."}]  # ids out of order and not 0..C-1: class i has the i-th smallest id


def write_coco(path: Path, root: Path, split: str, counts_by_id: dict[int, int], *, first_id: int = 0) -> dict:
    images, annotations, value = [], [], 0
    for category_id, count in counts_by_id.items():
        for _ in range(count):
            image_id = first_id + len(images)
            rel = f"{split}_val2018/{category_id}/{image_id}.jpg.png"
            write_png(root / rel, value % 256)
            images.append({"id": image_id, "file_name": rel, "width": 2, "height": 2})
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": category_id})
            value += 1
    data = {"images": images, "annotations": annotations[::-1], "categories": CATEGORIES, "info": {}}
    path.write_text(json.dumps(data), encoding="utf-8")
    return data


@pytest.fixture()
def inat(tmp_path):
    root = tmp_path / "inat"
    train = write_coco(tmp_path / "train2018.json", root, "train", {2: 120, 7: 30, 40: 5})
    val = write_coco(tmp_path / "val2018.json", root, "val", {2: 3, 7: 3, 40: 3}, first_id=1000)
    return root, tmp_path / "train2018.json", tmp_path / "val2018.json", train, val


def test_inaturalist_json_loads_with_category_names_and_counts(inat):
    root, train_file, val_file, train, _ = inat
    splits = load_split_manifest({"train": train_file, "test": val_file}, root)
    # Sorted by id: 2 -> class 0, 7 -> class 1, 40 -> class 2.
    assert splits["train"].features["label"].names == ["Plantae sp.", "Aves sp.", "Fungi sp."]
    assert get_class_counts(splits["train"]) == [120, 30, 5] and get_class_counts(splits["test"]) == [3, 3, 3]
    class_of = {2: 0, 7: 1, 40: 2}
    label_by_image = {a["image_id"]: class_of[a["category_id"]] for a in train["annotations"]}
    for k in (0, 125, 154):  # rows follow 'images'; the labels come from the (reversed) annotations
        image = train["images"][k]
        assert splits["train"][k]["label"] == label_by_image[image["id"]]
        assert np.asarray(splits["train"][k]["image"])[0, 0, 0] == k % 256
    info = splits.split_info
    assert info.class_counts == (120, 30, 5) and info.test_split == "val2018.json"


def test_inaturalist_json_errors(inat, tmp_path):
    root, train_file, val_file, train, val = inat

    def variant(name, **changes):
        path = tmp_path / name
        path.write_text(json.dumps({**val, **changes}), encoding="utf-8")
        return path

    unknown = variant("unknown.json", annotations=val["annotations"] + [{"image_id": 5000, "category_id": 99}])
    with pytest.raises(ValueError, match=r"unknown.json' annotations\[9\]: category_id 99 is not one of the file's 3 "
                                         r"categories \(ids 2..40\)"):
        load_split_manifest({"train": train_file, "test": unknown}, root)
    unlabelled = variant("test2018.json", annotations=[])
    with pytest.raises(ValueError, match=r"test2018.json' images\[0\] \(id 1000, .*\) has no annotation.*val2018.json"):
        load_split_manifest({"train": train_file, "test": unlabelled}, root)
    missing_image = variant("gone.json", images=val["images"] + [{"id": 9999, "file_name": "val/none.jpg"}],
                            annotations=val["annotations"] + [{"image_id": 9999, "category_id": 2}])
    with pytest.raises(FileNotFoundError, match=r"gone.json' images\[9\]: image 'val/none.jpg' is not a file"):
        load_split_manifest({"train": train_file, "test": missing_image}, root)
    other = variant("other.json", categories=CATEGORIES[:2] + [{"id": 40, "name": "Animalia sp."}])
    with pytest.raises(ValueError, match=r"manifests\['test'\]=.*other.json' has other categories than "
                                         r"manifests\['train'\]"):
        load_split_manifest({"train": train_file, "test": other}, root)
    not_coco = tmp_path / "plain.json"
    not_coco.write_text(json.dumps({"images": []}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"plain.json' lacks \['annotations', 'categories'\]"):
        load_split_manifest({"train": train_file, "test": not_coco}, root)
    with pytest.raises(ValueError, match="class_names is for text lists"):
        load_split_manifest({"train": train_file, "test": val_file}, root, class_names=["a", "b", "c"])
    text = write_lines(tmp_path / "val.txt", ["val_val2018/2/1000.jpg.png 0"])
    with pytest.raises(ValueError, match=r"manifests mix formats \{'train': '.json', 'test': '.txt'\}"):
        load_split_manifest({"train": train_file, "test": text}, root)
