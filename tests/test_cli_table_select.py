"""Honest settings selection: ltkd-table --select_on validation keeps, per method and seed, the sweep cell best on
the validation split and reports its test numbers and the chosen settings; without a validation split it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ltkd_hf.cli import table
from ltkd_hf.cli.table import Cell, select_on_validation

FAST = ["--max_steps", "1", "--lr_decay_epochs", "none", "--warmup_epochs", "0", "--per_device_train_batch_size", "8",
        "--verify_images", "false", "--save_strategy", "no", "--num_groups", "2", "--input_size", "16",
        "--student", "cifar_resnet8x4"]


def report(validation: float, test: float, validation_tail: float = 0.0) -> dict:
    """A cell's report with two classes of 10 test (and validation) images each; class 1 is the tail."""
    held = {"accuracy": validation, "per_class": [validation, validation_tail], "test_counts": [10, 10]}
    return {"accuracy": test, "per_class": [test, test], "test_counts": [10, 10], "validation": held}


def test_the_cell_best_on_validation_is_kept_per_method_and_seed():
    a1, a6 = Cell("ltkd", (("alpha", "1"),)), Cell("ltkd", (("alpha", "6"),))
    kd = Cell("kd", (), "logit_adjusted")
    results = [(0, a1, report(0.5, 0.9)), (0, a6, report(0.7, 0.1)), (1, a1, report(0.8, 0.2)),
               (1, a6, report(0.6, 0.95)), (0, kd, report(0.4, 0.4)), (1, kd, report(0.3, 0.3))]
    per_seed, chosen = select_on_validation(results, "accuracy", tail=[1])
    # chosen on validation, whatever the test numbers say
    assert [r["accuracy"] for r in per_seed["LTKD"]] == [0.1, 0.2]
    assert [c["settings"] for c in chosen["LTKD"]] == [{"alpha": 6.0}, {"alpha": 1.0}]  # values, not their text
    # in percent, as every other number of the table (it was a fraction beside percentages)
    assert [c["validation accuracy (%)"] for c in chosen["LTKD"]] == [pytest.approx(70.0), pytest.approx(80.0)]
    assert [c["seed"] for c in chosen["LTKD"]] == [0, 1] and len(per_seed["KD, logit-adjusted teacher"]) == 2
    # by the tail: the table's tail classes, recounted from per-class accuracy as the table's column is (a row that
    # swept num_groups ranked its cells by its own rarest group)
    by_tail = [(0, a1, report(0.9, 0.5, validation_tail=0.2)), (0, a6, report(0.1, 0.7, validation_tail=0.6))]
    per_seed, chosen = select_on_validation(by_tail, "accuracy_tail", tail=[1])
    assert [c["settings"] for c in chosen["LTKD"]] == [{"alpha": 6.0}]
    assert chosen["LTKD"][0]["validation accuracy_tail (%)"] == pytest.approx(60.0)


def write_folder(root, with_validation: bool) -> None:
    splits = {"train": {"heron": 12, "osprey": 6}, "test": {"heron": 3, "osprey": 3}}
    if with_validation:
        splits["val"] = {"heron": 3, "osprey": 3}
    write_splits(root, splits)


def write_splits(root, splits: dict[str, dict[str, int]]) -> None:
    """An image folder of 16x16 PNGs, ``{split: {class folder: images}}``; each class's pixels in a band of its own."""
    rng = np.random.default_rng(0)
    for split, counts in splits.items():
        for label, (name, n) in enumerate(counts.items()):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.minimum(rng.integers(0, 60, (16, 16, 3)) + 120 * label, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")


def test_select_on_validation_end_to_end_and_refused_without_validation(tmp_path):
    write_folder(tmp_path / "birds", with_validation=True)
    out = tmp_path / "table"
    argv = [*FAST, "--dataset", str(tmp_path / "birds"), "--imbalance_factor", "1", "--output_dir", str(out),
            "--losses", "ltkd", "--sweep", "alpha=1,6", "--select_on", "validation"]
    summary = table.main(argv)
    assert list(summary) == ["teacher", "LTKD"]
    (choice,) = summary["LTKD"]["chosen on validation"]
    cells = {alpha: json.loads((out / "seed0" / f"ltkd-alpha={alpha}" / "report.json").read_text())
             ["models"]["student (LTKD)"] for alpha in ("1", "6")}
    best = max(("1", "6"), key=lambda a: (cells[a]["validation"]["accuracy"], a == "1"))  # ties: the first cell
    assert choice["settings"] == {"alpha": float(best)}
    assert summary["LTKD"]["accuracy"]["values"] == [pytest.approx(100 * cells[best]["accuracy"], abs=1e-9)]
    text = (out / "table.md").read_text()
    assert "chosen per seed on the validation split by accuracy" in text
    # with the validation value it was chosen by, as table.json has it (table.md had the settings alone)
    assert f"seed 0: alpha={best} (validation accuracy {100 * cells[best]['validation']['accuracy']:.2f}%) |" in text

    write_folder(tmp_path / "plain", with_validation=False)
    with pytest.raises(ValueError, match=r"--select_on validation: --dataset .*plain has no validation split"):
        table.plan([*FAST, "--dataset", str(tmp_path / "plain"), "--imbalance_factor", "1", "--output_dir",
                    str(tmp_path / "p"), "--losses", "ltkd", "--sweep", "alpha=1,6", "--select_on", "validation"])


def test_choosing_by_the_tail_needs_validation_images_of_the_tail(tmp_path):
    """A dataset's own validation split without an image of the tail classes gave every cell a nan tail accuracy
    there, and --select_metric accuracy_tail kept each method's first cell, reported as chosen on validation."""
    write_splits(tmp_path / "birds", {"train": {"heron": 12, "kingfisher": 8, "osprey": 4},
                                      "test": dict.fromkeys(("heron", "kingfisher", "osprey"), 2),
                                      "val": {"heron": 2, "kingfisher": 2}})
    argv = [*FAST, "--dataset", str(tmp_path / "birds"), "--imbalance_factor", "1", "--output_dir",
            str(tmp_path / "table"), "--losses", "ltkd", "--sweep", "alpha=1,6", "--select_on", "validation",
            "--num_groups", "3"]
    with pytest.raises(ValueError, match=r"^--select_metric accuracy_tail: the validation split of --dataset .*birds "
                                         r"has no image of the tail classes \['osprey'\], so every cell would score "
                                         r"nan there and the choice would be arbitrary; pass --select_metric accuracy, "
                                         r"or add validation images of those classes\.$"):
        table.plan([*argv, "--select_metric", "accuracy_tail"])
    _, data, plans, _ = table.plan(argv)  # by overall accuracy: the classes it has images of count
    assert np.bincount(data.validation["label"], minlength=3).tolist() == [2, 2, 0]
    assert [cell.row for cell, _ in plans[0][2]] == ["LTKD (alpha=1)", "LTKD (alpha=6)"]
