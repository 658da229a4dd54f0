"""The Quickstart's demo as shipped (``ltkd-distill`` with the demo config, only --output_dir changed): the table it
prints and writes has the four rows, the KD row is the KD student's, and the README's claims hold. Marked `slow`
(run it with ``pytest -m slow``): it trains the demo at its real length, 5 to 12 minutes on 2 CPU cores, alone over
the default run's budget. tests/test_recipes.py checks the same table, card and KD row on the demo made short; only
the README's claims need the real length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from ltkd_hf.cli import distill
from ltkd_hf.data import apply_transforms, collate_fn, load_image_dataset

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # `pytest -m slow`; scheduled first there (conftest.py)

ROWS = ["teacher", "student (CE)", "student (KD)", "student (LTKD)"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "ltkd-demo"
    reports = distill.main(["--output_dir", str(out)])
    return out, reports


def test_the_demo_table_has_teacher_ce_kd_ltkd_in_order_everywhere(demo, capsys):
    out, reports = demo
    assert list(reports) == ROWS
    written = json.loads((out / "student" / "report.json").read_text())["models"]
    assert list(written) == ROWS
    for where, text in (("report.md", (out / "student" / "report.md").read_text()),
                        ("card", ModelCard.load(out / "student" / "README.md").text)):
        positions = [text.find(f"| {row} |") for row in ROWS]
        assert -1 not in positions and positions == sorted(positions), where
    # the card's setup, as the demo config writes it (weight decay, step decay, clipping at norm 5, 30 epochs)
    card = ModelCard.load(out / "student" / "README.md").text
    assert "| Optimizer | sgd momentum=0.9, learning rate 0.05, weight decay 0.0005 |" in card
    assert "| Learning-rate schedule | x 0.1 at epochs 20, 25 |" in card and "| Gradient clipping | norm 5 |" in card
    assert "| Weights evaluated | last-epoch weights |" in card


def test_the_kd_row_is_the_kd_student_distilled_from_the_same_teacher(demo):
    out, reports = demo
    kd, ltkd = (json.loads((out / stage / "config.json").read_text())["ltkd"]["settings"]
                for stage in ("student_kd", "student"))
    assert kd["objective"]["distill_loss"] == "kd" and ltkd["objective"]["distill_loss"] == "ltkd"
    assert kd["teacher"] == ltkd["teacher"] and kd["teacher"].startswith("teacher/ of this run (cifar_resnet8x4")
    assert kd["objective"]["warmup_epochs"] == ltkd["objective"]["warmup_epochs"] > 0
    assert kd["schedule"] == ltkd["schedule"] and kd["objective"]["ce_weight"] == 1.0
    # Independent check of the row: the student_kd weights, reloaded with timm, scored on the test split.
    model = timm.create_model("cifar_wrn_40_1", num_classes=10,
                              pretrained_cfg_overlay={"input_size": (3, 16, 16)}).eval()
    model.load_state_dict(load_file(out / "student_kd" / "model.safetensors"))
    test = apply_transforms(load_image_dataset("builtin:digits"), timm.data.resolve_data_config(model=model))["test"]
    batch = collate_fn([test[i] for i in range(len(test))])
    with torch.no_grad():
        correct = (model(batch["pixel_values"]).argmax(-1) == batch["labels"]).float().mean().item()
    assert reports["student (KD)"]["accuracy"] == pytest.approx(correct, abs=1e-6)  # float32; one image is 1/300


def test_the_readmes_claims(demo):
    """README, Results: on the tail, LTKD > KD > CE (by more than the seed spread of the 3-seed table for LTKD over
    KD); overall, LTKD is not below KD by more than that spread."""
    _, reports = demo
    tail = {row: 100 * reports[row]["accuracy_tail"] for row in ROWS}
    overall = {row: 100 * reports[row]["accuracy"] for row in ROWS}
    assert tail["student (LTKD)"] > tail["student (KD)"] > tail["student (CE)"], tail
    assert overall["student (LTKD)"] >= overall["student (KD)"] - 5, overall
