"""run_table.py: methods x seeds x a sweep in one command, resumable, with a dry run; and the balanced
("fix the teacher") cross-entropy against an independent computation."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from ltkd_hf.losses import log_class_prior, logit_adjusted_cross_entropy

from ltkd_hf.cli import table as run_table

from image_folders import TRAIN_COUNTS, write_folder

pytestmark = pytest.mark.heavy  # scheduled first (conftest.py)

REPO = Path(__file__).resolve().parents[1]

# 16-px inputs: the table's 18 cells train and score 4x fewer pixels than at the demo's 32 (fixture 76 -> 47 s)
FAST = ["--max_steps", "2", "--lr_decay_epochs", "none", "--imbalance_factor", "10", "--save_strategy", "no",
        "--input_size", "16", "--per_device_train_batch_size", "16", "--verify_images", "false", "--warmup_epochs", "0"]


def test_logit_adjusted_cross_entropy_against_a_loop():
    counts = [50, 20, 5, 1]
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    for tau in (0.0, 1.0, 2.5):
        expected = 0.0
        for z, y in zip(logits.tolist(), labels.tolist()):
            adjusted = [z_c + tau * math.log(n / sum(counts)) for z_c, n in zip(z, counts)]
            expected += -(adjusted[y] - math.log(sum(math.exp(a) for a in adjusted)))
        got = logit_adjusted_cross_entropy(logits, labels, log_class_prior(counts), tau)
        # float32 log-sum-exps of O(1-10) logits against a float64 loop: a few eps (1.2e-7) of those apart
        assert got.item() == pytest.approx(expected / len(labels), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="class_counts must be positive"):
        log_class_prior([3, 0, 1])


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    argv = [*FAST, "--output_dir", str(out), "--losses", "ce", "kd", "ltkd", "--seeds", "0", "1",
            "--sweep", "alpha=1,6", "--teacher_losses", "ce", "logit_adjusted"]
    return out, argv, run_table.main(argv)


def test_table_has_a_row_per_method_setting_and_teacher(table):
    out, _, summary = table
    assert list(summary) == [
        "teacher", "teacher (logit-adjusted)", "student (CE)", "KD", "KD, logit-adjusted teacher",
        "LTKD (alpha=1)", "LTKD (alpha=6)", "LTKD (alpha=1), logit-adjusted teacher",
        "LTKD (alpha=6), logit-adjusted teacher",
    ]
    written = json.loads((out / "table.json").read_text())["rows"]
    for row, entry in written.items():
        for key in ("accuracy_tail", "accuracy"):
            values = entry[key]["values"]
            assert len(values) == 2 and entry[key]["mean"] == pytest.approx(sum(values) / 2)
            assert entry[key]["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        seed_reports = [json.loads((out / f"seed{s}" / _folder(row) / "report.json").read_text()) for s in (0, 1)]
        recorded = [r["models"]["teacher" if row.startswith("teacher") else _model(r)] for r in seed_reports]
        assert entry["accuracy"]["values"] == pytest.approx([100 * r["accuracy"] for r in recorded])
        # the tail, recounted from per-class accuracy over the table's rarest group, is each report's own tail
        assert entry["accuracy_tail"]["values"] == pytest.approx([100 * r["accuracy_tail"] for r in recorded])
    markdown = (out / "table.md").read_text()
    assert "| LTKD (alpha=6) |" in markdown and "mean ± sample std over seeds [0, 1]" in markdown
    settings = json.loads((out / "seed0" / "ltkd-alpha=1" / "config.json").read_text())["ltkd"]["settings"]
    assert settings["objective"]["distill_loss_kwargs"]["alpha"] == 1.0 and settings["schedule"]["seed"] == 0
    balanced = json.loads((out / "seed1" / "teacher-logit_adjusted" / "config.json").read_text())["ltkd"]["settings"]
    assert balanced["objective"]["ce_logit_adjustment"] == 1.0 and balanced["schedule"]["seed"] == 1


def _folder(row: str) -> str:
    return {"teacher": "teacher", "teacher (logit-adjusted)": "teacher-logit_adjusted", "student (CE)": "ce",
            "KD": "kd", "KD, logit-adjusted teacher": "kd@logit_adjusted-teacher",
            "LTKD (alpha=1)": "ltkd-alpha=1", "LTKD (alpha=6)": "ltkd-alpha=6",
            "LTKD (alpha=1), logit-adjusted teacher": "ltkd-alpha=1@logit_adjusted-teacher",
            "LTKD (alpha=6), logit-adjusted teacher": "ltkd-alpha=6@logit_adjusted-teacher"}[row]


def _model(report: dict) -> str:
    return next(name for name in report["models"] if name.startswith("student"))


def test_rerun_skips_finished_cells_and_dry_run_trains_nothing(table, capsys):
    out, argv, summary = table
    # every cell is reused with its report: no weights trained, no test split scored again, no plot redrawn
    kept = ("model.safetensors", "report.json", "per_class_accuracy.png")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in kept}
    assert len(stamps) == 3 * 18
    assert run_table.main(argv) == summary
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in kept} == stamps
    capsys.readouterr()
    seeds = argv.index("--seeds")
    other_seeds = [*argv[:seeds], "--seeds", "0", "2", *argv[seeds + 3:]]
    assert run_table.main([*other_seeds, "--dry_run", "true"]) == {}
    listed = capsys.readouterr().out
    assert listed.count("reuse") == 9 and listed.count(" train ") == 9  # seed 0 is done, seed 2 is new
    assert not (out / "seed2").exists()


def test_a_given_teacher_has_its_row_scored_once(tmp_path):
    """With --teacher, table.md had no teacher row: only each cell's report held the teacher's accuracy."""
    from ltkd_hf.hub import save_student
    import timm

    birds = write_folder(tmp_path / "birds")
    save_student(timm.create_model("test_resnet", num_classes=3, pretrained_cfg_overlay={"input_size": (3, 32, 32)}),
                 tmp_path / "given", label_names=list(TRAIN_COUNTS))
    out = tmp_path / "table"
    summary = run_table.main([
        "--student", "test_convnext", "--input_size", "32", "--max_steps", "1", "--per_device_train_batch_size", "4",
        "--warmup_epochs", "0", "--save_strategy", "no", "--verify_images", "false", "--disable_tqdm", "true",
        "--dataset", str(birds), "--output_dir", str(out), "--teacher", str(tmp_path / "given"),
        "--seeds", "0", "1", "--losses", "ce", "kd",
    ])
    assert list(summary) == ["teacher", "student (CE)", "KD"]
    # the same teacher in every seed: one row of one model, as each KD cell's report scored it
    scored = [json.loads((out / f"seed{s}" / "kd" / "report.json").read_text())["models"]["teacher"] for s in (0, 1)]
    assert scored[0]["accuracy"] == scored[1]["accuracy"]
    assert summary["teacher"]["seeds"] == 1 and summary["teacher"]["accuracy"]["std"] is None
    assert summary["teacher"]["accuracy"]["values"] == pytest.approx([100 * scored[0]["accuracy"]])
    teacher_row = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| teacher |"))
    assert teacher_row.endswith(" | 1 |")


def test_a_moved_table_folder_named_by_a_relative_path_is_reused(table, tmp_path, monkeypatch, capsys):
    """The cells recorded their teacher by its absolute folder: a table moved (or named ./out vs /abs/out) was
    refused as "made with other settings" and every cell had to be trained again. The plan decides reuse, so the dry
    run shows it (a whole reuse is run in the test above)."""
    out, argv, _ = table
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    monkeypatch.chdir(tmp_path)
    relative = [("moved" if arg == str(out) else arg) for arg in argv]
    capsys.readouterr()
    assert run_table.main([*relative, "--dry_run", "true"]) == {}
    listed = capsys.readouterr().out
    assert listed.count("reuse") == 18 and " train " not in listed and "retrain" not in listed


def cell_report(accuracy: float, per_class: list[float], test_counts: list[int]) -> dict:
    return {"accuracy": accuracy, "per_class": per_class, "test_counts": test_counts}


def test_one_seed_has_no_sample_std():
    """One seed printed "85.00 ± 0.00", a spread of zero measured over nothing."""
    seed0, seed1 = cell_report(0.85, [1.0, 0.5], [10, 10]), cell_report(0.80, [1.0, 0.4], [10, 10])
    one = run_table.summarise({"KD": [seed0]}, tail=[1])
    assert one["KD"]["accuracy"] == {"values": [85.0], "mean": 85.0, "std": None}
    assert "| KD | 50.00 | 85.00 | 1 |" in run_table.format_table(one, "title")
    two = run_table.summarise({"KD": [seed0, seed1]}, tail=[1])
    assert two["KD"]["accuracy"]["std"] == pytest.approx(statistics.stdev([85.0, 80.0]))
    assert "| KD | 45.00 ± 7.07 | 82.50 ± 3.54 | 2 |" in run_table.format_table(two, "title")


def test_the_best_students_numbers_are_bold_as_in_the_paper():
    """The README's table showed LTKD in bold as made by ltkd-table, which bolded nothing."""
    summary = run_table.summarise({
        "teacher": [cell_report(0.95, [1.0, 0.9], [10, 10])],  # above every student: never bold
        "KD": [cell_report(0.85, [1.0, 0.6], [10, 10])],
        "LTKD": [cell_report(0.80, [1.0, 0.7], [10, 10])],
    }, tail=[1])
    table = run_table.format_table(summary, "title")
    assert "| teacher | 90.00 | 95.00 | 1 |" in table
    assert "| KD | 60.00 | **85.00** | 1 |" in table and "| LTKD | **70.00** | 80.00 | 1 |" in table


def test_the_tail_column_is_one_set_of_classes_in_every_row():
    """With --sweep num_groups=3,10 the K = 10 row's "tail" was its own rarest tenth (one class), beside the other
    rows' rarest third: the column changed meaning within one table."""
    per_class, test_counts = [0.9, 0.8, 0.7, 0.6, 0.2, 0.4], [5, 5, 5, 5, 2, 8]
    k10 = {**cell_report(0.6, per_class, test_counts), "accuracy_tail": 0.4, "groups": {"names": ["group_9"]}}
    summary = run_table.summarise({"LTKD (num_groups=10)": [k10]}, tail=[4, 5])  # the table's rarest third
    assert summary["LTKD (num_groups=10)"]["accuracy_tail"]["values"] == [pytest.approx(100 * (0.2 * 2 + 0.4 * 8) / 10)]
    # a validation split without an image of the tail classes: no number (it divided by zero)
    assert math.isnan(run_table._classes_accuracy(cell_report(0.5, [0.5, None], [4, 0]), [1]))


def test_a_balanced_teacher_trains_on_logit_adjusted_cross_entropy(tmp_path):
    """The trainer's CE term with ce_logit_adjustment = tau is CE(z + tau log pi, y) in training (checked on the
    logged term at lr 0), and plain CE in evaluation."""
    from tiny_setup import CLASS_COUNTS, SyntheticImages, make_config, make_student, make_trainer

    student, data = make_student(), SyntheticImages(8)
    config = make_config(tmp_path, max_steps=1, learning_rate=0.0, distill_loss="ce", ce_logit_adjustment=1.0,
                         per_device_train_batch_size=8)
    trainer = make_trainer(config, model=student, teacher_model=None, train_dataset=data, eval_dataset=data)
    trainer.train()
    with torch.no_grad():
        logits = student(pixel_values=data.images).logits
    prior = torch.tensor(CLASS_COUNTS, dtype=torch.float64) / sum(CLASS_COUNTS)
    adjusted = logits.double() + prior.log()
    expected = -(adjusted.gather(1, data.labels[:, None]).squeeze(1) - adjusted.logsumexp(1)).mean().item()
    assert trainer.state.log_history[0]["ce"] == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 vs float64
    plain = torch.nn.functional.cross_entropy(logits, data.labels).item()
    assert trainer.evaluate()["eval_ce"] == pytest.approx(plain, rel=1e-5, abs=1e-6) and abs(plain - expected) > 1e-3
