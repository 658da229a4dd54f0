"""The user's path: run_distill.py on the demo (reduced), the configs, run_eval.py, resume and bad input."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from ltkd_hf.cli import distill as run_distill
from ltkd_hf.cli import evaluate as run_eval
from ltkd_hf.cli import table as run_table
from ltkd_hf.cli import teacher as run_teacher
from ltkd_hf.cli.arguments import DataArguments
from ltkd_hf.cli.parsing import parse_args
from ltkd_hf.cli.stages import source_splits

from launch import torchrun

from ltkd_hf.data import apply_transforms, collate_fn, load_image_dataset

pytestmark = pytest.mark.heavy  # scheduled first (conftest.py)

REPO = Path(__file__).resolve().parents[1]

# The demo as shipped, made short: 1 epoch per stage, a milder imbalance so every class has a few images.
TEACHER_QUICK = ["--teacher_epochs", "1", "--imbalance_factor", "10", "--lr_decay_epochs", "0.5"]
QUICK = [*TEACHER_QUICK, "--num_train_epochs", "1", "--warmup_epochs", "0.5"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    argv = [*QUICK, "--output_dir", str(out)]
    reports = run_distill.main(argv)
    return out, argv, reports


def test_demo_writes_folder_card_report_and_plots(demo, capsys):
    out, _, reports = demo
    student = out / "student"
    for name in (
        "model.safetensors",
        "config.json",
        "README.md",
        "report.json",
        "report.md",
        "per_class_accuracy.png",
        "teacher_bias.png",
    ):
        assert (student / name).is_file(), name
    assert (out / "teacher" / "model.safetensors").is_file() and (out / "student_ce" / "model.safetensors").is_file()
    assert set(reports) == {"teacher", "student (CE)", "student (KD)", "student (LTKD)"}

    report = json.loads((student / "report.json").read_text())
    ltkd = report["models"]["student (LTKD)"]
    card = ModelCard.load(student / "README.md")
    metrics = {m["type"]: m["value"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    for key in ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail"):
        assert metrics[key] == pytest.approx(ltkd[key])
    assert "import ltkd_hf" in card.text
    # the card states what ran: where the teacher came from, the split as made, the seeds, the real split name
    assert "| Teacher | `teacher/ of this run (cifar_resnet8x4, trained here for 1 epoch at learning rate 0.05 with cross-entropy on this split)` |" in card.text
    assert "n_c = int(N_c * 10^(-c / (C - 1))), imbalance factor 10" in card.text and "LT seed 0" in card.text
    assert "| Training seed | 0 |" in card.text and "split `test` (balanced, 30 images per class)" in card.text
    assert card.data.datasets is None  # builtin:digits is not a Hub dataset

    # Independent check of the reported accuracy: reload the saved folder with timm and score the test split.
    model = timm.create_model(f"local-dir:{student}", pretrained=True).eval()
    test = apply_transforms(load_image_dataset("builtin:digits"), timm.data.resolve_data_config(model=model))["test"]
    batch = collate_fn([test[i] for i in range(len(test))])
    with torch.no_grad():
        predictions = model(batch["pixel_values"]).argmax(-1)
    labels = batch["labels"]
    assert ltkd["accuracy"] == pytest.approx((predictions == labels).float().mean().item())
    tail = torch.tensor([report["groups"]["class_to_group"][y] == 2 for y in labels.tolist()])
    assert ltkd["accuracy_tail"] == pytest.approx((predictions[tail] == labels[tail]).float().mean().item())


ROWS = ["teacher", "student (CE)", "student (KD)", "student (LTKD)"]


def check_demo_table(out: Path, reports: dict, schedule: str) -> None:
    """The demo's rows (teacher, CE, KD, LTKD) in this order in what it returns, report.json, report.md and the card,
    and the card's setup as the demo config writes it (weight decay, the step decay ``schedule``, clipping at 5)."""
    assert list(reports) == ROWS
    assert list(json.loads((out / "student" / "report.json").read_text())["models"]) == ROWS
    card = ModelCard.load(out / "student" / "README.md").text
    for where, text in (("report.md", (out / "student" / "report.md").read_text()), ("card", card)):
        positions = [text.find(f"| {row} |") for row in ROWS]
        assert -1 not in positions and positions == sorted(positions), where
    assert "| Optimizer | sgd momentum=0.9, learning rate 0.05, weight decay 0.0005 |" in card
    assert f"| Learning-rate schedule | {schedule} |" in card and "| Gradient clipping | norm 5 |" in card
    assert "| Weights evaluated | last-epoch weights |" in card


def check_kd_row(out: Path, reports: dict) -> None:
    """The KD row is the KD student's, distilled from the same teacher with the same schedule, checked by scoring
    its weights, reloaded with timm, on the test split."""
    kd, ltkd = (json.loads((out / stage / "config.json").read_text())["ltkd"]["settings"]
                for stage in ("student_kd", "student"))
    assert kd["objective"]["distill_loss"] == "kd" and ltkd["objective"]["distill_loss"] == "ltkd"
    assert kd["teacher"] == ltkd["teacher"] and kd["teacher"].startswith("teacher/ of this run (cifar_resnet8x4")
    assert kd["objective"]["warmup_epochs"] == ltkd["objective"]["warmup_epochs"] > 0
    assert kd["schedule"] == ltkd["schedule"] and kd["objective"]["ce_weight"] == 1.0
    model = timm.create_model("cifar_wrn_40_1", num_classes=10,
                              pretrained_cfg_overlay={"input_size": (3, 16, 16)}).eval()
    model.load_state_dict(load_file(out / "student_kd" / "model.safetensors"))
    test = apply_transforms(load_image_dataset("builtin:digits"), timm.data.resolve_data_config(model=model))["test"]
    batch = collate_fn([test[i] for i in range(len(test))])
    with torch.no_grad():
        correct = (model(batch["pixel_values"]).argmax(-1) == batch["labels"]).float().mean().item()
    assert reports["student (KD)"]["accuracy"] == pytest.approx(correct, abs=1e-6)  # float32; one image is 1/300


def test_the_demo_table_has_teacher_ce_kd_ltkd_in_order_everywhere(demo):
    out, _, reports = demo
    check_demo_table(out, reports, "x 0.1 at epochs 0.5")


def test_the_kd_row_is_the_kd_student_distilled_from_the_same_teacher(demo):
    out, _, reports = demo
    check_kd_row(out, reports)


def test_run_eval_reproduces_the_report(demo, tmp_path):
    out, _, reports = demo
    report = run_eval.main(
        ["--model", str(out / "student"), "--dataset", "builtin:digits", "--output_dir", str(tmp_path)]
    )
    for key in ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail"):
        assert report[key] == pytest.approx(reports["student (LTKD)"][key])
    assert json.loads((tmp_path / "report.json").read_text())["models"]


def test_other_settings_in_the_same_folder_stop_before_training(demo):
    """The README's pair of commands (a config, then the same with --distill_loss dkd) must not relabel the old
    student: the run stops before any training and names each difference."""
    out, argv, _ = demo
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"(?s)student holds a finished student stage made with other settings.*"
                       r"distill_loss \(objective.distill_loss\): \"ltkd\" in .*, \"dkd\" now.*--overwrite_output_dir true"):
        run_distill.main([*argv, "--distill_loss", "dkd"])
    with pytest.raises(ValueError, match=r"imbalance_factor \(data.long_tail.imbalance_factor\): 10.0 in .*teacher, 5.0 now"):
        run_distill.main([*argv, "--imbalance_factor", "5"])
    with pytest.raises(ValueError, match=r"seed \(data.long_tail.seed\): 0 in .*teacher, 1 now"):
        run_distill.main([*argv, "--lt_seed", "1"])
    # every stale stage at once, and the fix that keeps the teacher (--overwrite_output_dir retrains it too): the
    # first stale stage alone was named, with --overwrite_output_dir as the only fix
    with pytest.raises(ValueError) as err:
        run_distill.main([*argv, "--num_train_epochs", "2"])
    message = str(err.value)
    for stage in ("student_ce", "student_kd", "student"):
        assert f"{out / stage} holds a finished {stage} stage made with other settings than this command: " \
               f"num_train_epochs (schedule.num_train_epochs): 1.0 in {out / stage}, 2.0 now." in message
    assert "teacher holds" not in message
    assert (f"To train them again, delete {out / 'student_ce'}, {out / 'student_kd'}, {out / 'student'}; the other "
            "stage, which matches this command, is still reused or resumed; or pass --overwrite_output_dir true to "
            "train every stage of the command again, or choose another --output_dir.") in message
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # nothing written


def test_same_command_resumes_instead_of_retraining(demo):
    out, argv, reports = demo
    teacher_stamp = (out / "teacher" / "model.safetensors").stat().st_mtime_ns
    before = load_file(out / "student" / "model.safetensors")
    again = run_distill.main(argv)
    assert (out / "teacher" / "model.safetensors").stat().st_mtime_ns == teacher_stamp
    after = load_file(out / "student" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # resumed from the last checkpoint: no new steps
    assert again["student (LTKD)"]["accuracy"] == reports["student (LTKD)"]["accuracy"]


def parsed_values(argv):
    """The command's settings as ltkd-distill parses them, every dataclass merged."""
    merged = {}
    for obj in parse_args("ltkd-distill", run_distill.ARGUMENTS, argv).values:
        merged.update(vars(obj))
    return merged


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "recipes" / "configs" / "*.yaml"))), ids=os.path.basename)
def test_every_config_parses_into_the_dataclasses(path):
    parsed = parsed_values(["--config", path])
    values = yaml.safe_load(Path(path).read_text())
    values.pop("defaults", None)  # the layer under it: resolved in tests/test_cli_configs.py
    values.pop("methods", None)  # each method's own settings, applied per cell: tests/test_cli_methods.py
    for key, value in values.items():
        got = getattr(parsed[key], "value", parsed[key])  # TrainingArguments turns strategies into enums
        if key == "report_to":  # and "none" into no integration
            got = got or "none"
        assert (list(got) if isinstance(value, list) else got) == value, (key, got, value)


def test_command_line_overrides_the_config(tmp_path):
    path = REPO / "recipes" / "configs" / "cifar100_lt_r100_resnet32x4_resnet8x4.yaml"
    parsed = parsed_values(["--config", str(path), "--distill_loss", "dkd"])
    assert parsed["distill_loss"] == "dkd" and parsed["imbalance_factor"] == 100 and parsed["student"] == "cifar_resnet8x4"
    bad = tmp_path / "bad.yaml"
    bad.write_text("imbalance_factr: 10\n")
    with pytest.raises(ValueError, match=r"unknown settings \['imbalance_factr'\]; did you mean imbalance_factor \(for "
                                         r"imbalance_factr\)\?$"):  # as an unknown flag says
        parsed_values(["--config", str(bad)])


# -- bad input fails before any training ----------------------------------------------------------
def test_missing_teacher_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_teacher"):
        run_distill.main(
            [*QUICK[2:], "--output_dir", str(tmp_path / "out"), "--teacher", str(tmp_path / "no_such_teacher")]  # no --teacher_epochs
        )
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_output_dir_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="--output_dir .*a_file/run.* cannot be written"):
        run_distill.main([*QUICK, "--output_dir", str(blocker / "run")])


@pytest.mark.parametrize("program", [run_distill, run_teacher, run_table], ids=["distill", "teacher", "table"])
def test_an_empty_output_dir_is_refused(tmp_path, monkeypatch, program):
    """--output_dir "" trained every stage into the current folder (Path("") is ".")."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^--output_dir '': an empty name would write into the current folder; "
                                         r"pass a folder name"):
        program.main([*TEACHER_QUICK, "--output_dir", ""])
    assert not any(tmp_path.iterdir())


def test_push_to_hub_without_a_token(fake_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))  # fake_hub: no token
    with pytest.raises(ValueError, match="HF_TOKEN"):
        run_distill.main(
            [
                *QUICK,
                "--output_dir",
                str(tmp_path / "out"),
                "--push_to_hub",
                "true",
                "--hub_model_id",
                "alice/ltkd-demo",
            ]
        )
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_class_counts_recorded_for_run_eval(demo):
    out, _, _ = demo
    counts = run_eval.recorded_config(str(out / "student"))["ltkd"]["settings"]["data"]["class_counts"]
    report = json.loads((out / "student" / "report.json").read_text())
    assert counts == report["class_counts"] and np.argmax(counts) == 0


def test_two_processes_shard_train_and_gather_every_test_image(tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): each stage runs DDP on half the batches and scoring gathers
    the whole balanced test split. The teacher and the LTKD student: the CE and KD students' stages are the same code."""
    import math

    out = tmp_path / "run"
    proc = torchrun(REPO / "recipes" / "run_distill.py", *QUICK, "--output_dir", out, "--use_cpu", "true",
                    "--ddp_backend", "gloo", "--save_strategy", "epoch", "--compare_ce_student", "false",
                    "--compare_kd_student", "false", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "student" / "report.json").read_text())
    assert {m["num_samples"] for m in report["models"].values()} == {300}  # 30 per class, none lost or doubled
    state = json.loads(next((out / "teacher").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == math.ceil(sum(report["class_counts"]) / (64 * 2))  # one epoch, batch 64 x 2


def test_processes_launched_without_distributed_training_are_refused_before_anything_trains(tmp_path):
    """torchrun on CPU without --use_cpu: each process trained its own copy, then both wrote the same folders (one
    crashed on the other's staging file); the trainer's guard never fired, as accelerate reported one process."""
    out = tmp_path / "run"
    proc = torchrun(REPO / "recipes" / "run_distill.py", *QUICK, "--output_dir", out, timeout=300)
    assert proc.returncode != 0
    # one line per process from the program (the launcher adds its own report of the failed children)
    assert proc.stderr.count("run_distill.py: error: 2 processes were launched, but accelerate set up no distributed "
                             "training (world size 1)") == 2 and "--use_cpu true --ddp_backend gloo" in proc.stderr
    assert not out.exists()


def test_push_to_hub_uploads_the_student_and_it_loads_back_in_timm(demo, fake_hub, tmp_path):
    """The demo's command run again with --push_to_hub, in a copy of its folder: every stage is reused (the push
    settings are no training setting) and the student it trained goes up."""
    trained, argv, _ = demo
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    run_distill.main([*argv[:-1], str(out), "--push_to_hub", "true", "--hub_model_id", "alice/ltkd-demo",
                      "--hub_token", fake_hub.token])
    student = out / "student"
    repo = fake_hub.repos["alice/ltkd-demo"]
    assert {"model.safetensors", "config.json", "README.md", "report.json", "teacher_bias.png"} <= set(repo.files)
    assert repo.files["model.safetensors"] == (trained / "student" / "model.safetensors").read_bytes()
    assert not any(name.startswith("checkpoint") for name in repo.files)
    downloaded = timm.create_model("hf-hub:alice/ltkd-demo", pretrained=True).eval()
    local = timm.create_model(f"local-dir:{student}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(downloaded(x), local(x))


def test_split_names_from_the_command_line():
    assert source_splits(DataArguments()) is None  # detected: test / validation / valid / val
    assert source_splits(DataArguments(test_split="validation")) == "validation"
    assert source_splits(DataArguments(train_split="training", test_split="eval")) == {
        "train": "training",
        "test": "eval",
    }
    with pytest.raises(ValueError, match="--train_split 'training' needs --test_split too"):
        source_splits(DataArguments(train_split="training"))


def test_run_teacher_trains_saves_and_reports_the_biased_teacher(tmp_path):
    report = run_teacher.main([*TEACHER_QUICK, "--output_dir", str(tmp_path)])
    folder = tmp_path / "teacher"
    written = json.loads((folder / "report.json").read_text())
    assert set(written["models"]) == {"teacher"} and written["models"]["teacher"]["accuracy"] == report["accuracy"]
    assert sum(written["models"]["teacher"]["group_mass"]) == pytest.approx(1.0, abs=1e-6)  # mean softmax mass, 3 groups
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    settings = json.loads((folder / "config.json").read_text())["ltkd"]["settings"]
    assert model.num_classes == 10 and settings["data"]["class_counts"] == written["class_counts"]
