"""Held-out data to choose settings on: a dataset's own validation split, or a balanced one held out of the training
rows before the long-tailed construction."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from PIL import Image

from ltkd_hf.cli import distill, evaluate
from ltkd_hf.data import ImageSplits, SplitInfo, hold_out_validation, load_image_dataset


def labelled(counts: list[int]) -> Dataset:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    features = Features({"row": Value("int64"), "label": ClassLabel(names=[f"c{c}" for c in range(len(counts))])})
    return Dataset.from_dict({"row": list(range(len(labels))), "label": labels}, features=features)


def test_a_balanced_validation_split_is_held_out_before_the_long_tail():
    data = labelled([30, 20, 12])
    rest, validation = hold_out_validation(data, 5, seed=3)
    assert np.bincount(validation["label"]).tolist() == [5, 5, 5]
    assert np.bincount(rest["label"]).tolist() == [25, 15, 7]
    assert set(rest["row"]).isdisjoint(validation["row"]) and len(set(rest["row"]) | set(validation["row"])) == 62
    # each class's rows shuffled with RandomState(seed) in class order, the first 5 held out (independent loop)
    rng = np.random.RandomState(3)
    expected = []
    for c, start, n in ((0, 0, 30), (1, 30, 20), (2, 50, 12)):
        rows = np.arange(start, start + n)
        rng.shuffle(rows)
        expected += sorted(rows[:5].tolist())
    assert sorted(validation["row"]) == sorted(expected)
    # ImageSplits records the hold-out, and the long-tailed construction after it keeps the record
    splits = ImageSplits({"train": data, "test": data}, SplitInfo.from_dataset(data)).hold_out_validation(5, seed=3)
    assert splits["train"]["row"] == rest["row"] and splits["validation"]["row"] == validation["row"]
    info = splits.long_tailed(2.0).split_info
    assert info.validation_holdout == {"per_class": 5, "seed": 3} and info.class_counts == (25, 10, 3)
    assert "first 5 images per class held out as a balanced validation split (seed 3)" in info.describe()
    # kept as it is after a one-image hold-out: it said "every training image kept" and "first 1 images"
    one = ImageSplits({"train": data, "test": data}, SplitInfo.from_dataset(data)).hold_out_validation(1, seed=3)
    assert one.long_tailed(1.0).split_info.describe() == (
        "every training image not held out kept (imbalance factor 1: the source's own class counts, 29 to 11 images "
        "per class (n_max / n_min 2.64)); first 1 image per class held out as a balanced validation split (seed 3)")
    with pytest.raises(ValueError, match="already have a validation split"):
        splits.hold_out_validation(5)
    with pytest.raises(ValueError, match=r"classes \['c2 \(12\)'\] have no more than 12 training images"):
        hold_out_validation(data, 12)


def write_folder(root, splits):
    rng = np.random.default_rng(0)
    for split, counts in splits.items():
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(root / split / name / f"{i}.png")


def test_a_folder_with_val_has_a_validation_split_and_the_flags_record_what_they_do(tmp_path):
    write_folder(tmp_path / "birds", {"train": {"heron": 6, "osprey": 4}, "val": {"heron": 2, "osprey": 2},
                                      "test": {"heron": 3, "osprey": 3}})
    splits = load_image_dataset(tmp_path / "birds")
    assert sorted(splits) == ["test", "train", "validation"] and len(splits["validation"]) == 4
    assert len(splits["test"]) == 6  # the test split stays the test split
    plan = ["--dataset", str(tmp_path / "birds"), "--output_dir", str(tmp_path / "o"), "--verify_images", "false",
            "--num_groups", "2"]
    _, data, _, _, _ = distill.plan(plan)
    assert len(data.validation) == 4 and sum(data.split_info.class_counts) == 10
    with pytest.raises(ValueError, match=r"--validation_per_class 1: --dataset .* has its own validation split"):
        distill.plan([*plan, "--validation_per_class", "1"])
    # ltkd-eval scores the test split alone: --validation_split was accepted and read by nothing
    with pytest.raises(ValueError, match=r"^--validation_split: not a setting of ltkd-eval, whose stages it does not "
                                         r"reach"):
        evaluate.main(["--model", str(tmp_path / "any"), "--dataset", str(tmp_path / "birds"), "--train_split",
                       "train", "--test_split", "test", "--validation_split", "validation"])

    write_folder(tmp_path / "plain", {"train": {"heron": 6, "osprey": 4}, "test": {"heron": 3, "osprey": 3}})
    plain = ["--dataset", str(tmp_path / "plain"), "--output_dir", str(tmp_path / "p"), "--verify_images", "false",
             "--num_groups", "2"]
    _, data, stages, _, _ = distill.plan(plain)
    assert data.validation is None
    _, held, held_stages, _, _ = distill.plan([*plain, "--validation_per_class", "2"])
    assert len(held.validation) == 4 and held.split_info.class_counts == (4, 2)
    for name in stages:  # it changes the training split: every stage records it
        assert held_stages[name].settings["data"]["validation_holdout"] == {"per_class": 2, "seed": 0}
        assert stages[name].settings["data"]["validation_holdout"] is None
    with pytest.raises(ValueError, match=r"--validation_per_class 4: .*\['osprey \(4\)'\]"):
        distill.plan([*plain, "--validation_per_class", "4"])
