"""A newcomer's path: exactly the README's "Train on your own image folder" command, on a folder of PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TRAIN_COUNTS = {"heron": 12, "kingfisher": 6, "osprey": 3}  # already long-tailed


def write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, counts in (("train", TRAIN_COUNTS), ("test", {name: 4 for name in TRAIN_COUNTS})):
        for label, (name, n) in enumerate(counts.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (32, 32, 3)) + 80 * label  # each class its own brightness
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i:03d}.png")


def test_readme_command_on_an_image_folder(tmp_path):
    readme = (REPO / "README.md").read_text()
    command = (
        "accelerate launch recipes/run_distill.py --dataset my_images --imbalance_factor 1 --output_dir outputs/my-run"
    )
    assert command in readme  # the test runs what the README says
    write_folder(tmp_path / "my_images")
    args = command.split()[2:]
    args[0] = str(REPO / args[0])  # the recipe from this checkout; data and outputs relative to the user's folder
    shorter = ["--num_train_epochs", "1", "--teacher_epochs", "1", "--warmup_epochs", "0.5"]  # 1-epoch stages
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", *args, *shorter],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    student = tmp_path / "outputs" / "my-run" / "student"
    report = json.loads((student / "report.json").read_text())
    assert report["class_counts"] == list(TRAIN_COUNTS.values())
    assert set(report["models"]) == {"teacher", "student (CE)", "student (LTKD)"}
    config = json.loads((student / "config.json").read_text())
    assert config["label_names"] == sorted(TRAIN_COUNTS)
    assert "| student (LTKD) |" in proc.stdout and (student / "README.md").is_file()
    # The card and the report, which a push publishes, name the folder, not where it lies on this machine.
    card = (student / "README.md").read_text()
    assert str(tmp_path) not in card and "`my_images`, split `train`" in card
    assert report["metadata"]["dataset"] == "my_images"
    assert str(tmp_path) not in (student / "report.json").read_text() + (student / "report.md").read_text()
