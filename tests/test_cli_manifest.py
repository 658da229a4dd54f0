"""The standard benchmarks' splits through the recipes: --split_manifest reads a published list with its exact class
counts (no long-tailed construction on top), and the report adds many / medium / few-shot accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltkd_hf.cli import distill

COUNTS = {0: 120, 1: 30, 2: 5}  # many (> 100), medium (20..100), few (< 20) shots


def write_benchmark(root: Path) -> None:
    """Images under root/images and ImageNet-LT-style lists (``relative/path label`` per line)."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", COUNTS), ("test", dict.fromkeys(COUNTS, 4))):
        lines = []
        for label, n in counts.items():
            folder = root / "images" / split / f"n{label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (32, 32, 3)) + 80 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
                lines.append(f"{split}/n{label:04d}/{i}.png {label}")
        (root / f"Tiny_LT_{split}.txt").write_text("\n".join(lines) + "\n")


def test_a_published_split_loads_with_its_exact_counts_and_reports_shot_accuracy(tmp_path):
    write_benchmark(tmp_path)
    argv = ["--dataset", str(tmp_path / "images"), "--split_manifest", f"train={tmp_path / 'Tiny_LT_train.txt'}",
            f"test={tmp_path / 'Tiny_LT_test.txt'}", "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
            "--per_device_train_batch_size", "16", "--lr_decay_epochs", "none", "--warmup_epochs", "0",
            "--compare_ce_student", "false", "--verify_images", "false"]
    _, data, stages, _, _ = distill.plan(argv)
    assert data.split_info.class_counts == (120, 30, 5) and data.split_info.long_tail is None
    assert "published long-tailed split Tiny_LT_train.txt" in data.split_info.describe()
    assert stages["student"].settings["data"]["fingerprint"].startswith("lists:")
    distill.main(argv)
    report = json.loads((tmp_path / "out" / "student" / "report.json").read_text())["models"]["student (LTKD)"]
    # each shot group is one class here: its accuracy is that class's
    for key, label in (("accuracy_many_shot", 0), ("accuracy_medium_shot", 1), ("accuracy_few_shot", 2)):
        assert report[key] == pytest.approx(report["per_class"][label], abs=1e-12)


def test_the_long_tail_construction_is_refused_on_a_published_split(tmp_path):
    write_benchmark(tmp_path)
    with pytest.raises(ValueError, match=r"--split_manifest: the lists are the long-tailed split already.*--imbalance_factor 10 -> 1"):
        distill.plan(["--dataset", str(tmp_path / "images"), "--split_manifest", f"train={tmp_path / 'Tiny_LT_train.txt'}",
                      f"test={tmp_path / 'Tiny_LT_test.txt'}", "--imbalance_factor", "10"])
    # the construction's exponent and row seed draw nothing from the lists either (the seed does with
    # --validation_per_class, which holds images out of the training list)
    with pytest.raises(ValueError, match=r"^--split_manifest: the lists are the long-tailed split already; drop the "
                                         r"long-tail construction \(--lt_exponent paper, --lt_seed 4\)\.$"):
        distill.plan(["--dataset", str(tmp_path / "images"), "--split_manifest", f"train={tmp_path / 'Tiny_LT_train.txt'}",
                      f"test={tmp_path / 'Tiny_LT_test.txt'}", "--imbalance_factor", "1", "--lt_exponent", "paper",
                      "--lt_seed", "4"])
    with pytest.raises(ValueError, match=r"--split_manifest train: write SPLIT=LIST_FILE"):
        distill.plan(["--dataset", str(tmp_path / "images"), "--split_manifest", "train"])
    # the loader's errors name the flags, not load_split_manifest's image_root, class_names and manifests['train']
    lists = ["--split_manifest", f"train={tmp_path / 'Tiny_LT_train.txt'}", f"test={tmp_path / 'Tiny_LT_test.txt'}"]
    with pytest.raises(FileNotFoundError, match=r"^--dataset .*elsewhere: --dataset '.*elsewhere' is not a folder; pass "
                                                r"the folder the manifests' image paths are relative to\.$"):
        distill.plan(["--dataset", str(tmp_path / "elsewhere"), *lists])
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--split_manifest train=.*Tiny_LT_train\.txt line 1: image "
                                                r"'train/n0000/0\.png' is not a file under --dataset '.*elsewhere' .*"
                                                r"Pass as --dataset the folder"):
        distill.plan(["--dataset", str(tmp_path / "elsewhere"), *lists])
    with pytest.raises(FileNotFoundError, match=r"--manifest_class_names '.*names\.txt' is not a file"):
        distill.plan(["--dataset", str(tmp_path / "images"), *lists, "--manifest_class_names",
                      str(tmp_path / "names.txt")])
