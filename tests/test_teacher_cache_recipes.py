"""``--teacher_cache true`` in the recipes: the cache beside the teacher's folder, created by the first distillation
that needs it and reused by every later one of the same teacher and split (another loss, another run, every cell of a
table's seed), created anew once the teacher's weights change; refused where it cannot work, before anything trains."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ltkd_hf.cli import distill, table, teacher
from ltkd_hf.cli.parsing import parse_args
from ltkd_hf.models import load_teacher
from ltkd_hf.teacher_cache import FILLED_NAME, KEY_NAME, LOGITS_NAME, check_cache_folder, tensor_fingerprint

from image_folders import TRAIN_COUNTS, write_folder

# Tiny models at 32 px on a folder of 13 images: one training step per stage.
FAST = ["--student", "test_convnext", "--input_size", "32",
        "--max_steps", "1", "--per_device_train_batch_size", "4", "--warmup_epochs", "0", "--save_strategy", "no",
        "--verify_images", "false", "--disable_tqdm", "true", "--in_memory_data", "true"]
CACHE = ["--teacher_cache", "true"]
TEACHER = ["--teacher_architecture", "test_resnet"]  # trained here
NAMES = list(TRAIN_COUNTS)


@pytest.fixture(scope="module")
def birds(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("birds"))


def cache_events(caplog, evaluation: bool = False) -> list[str]:
    """"create <folder>" / "reuse <folder>" for each time a trainer opened a teacher-logit cache, in order: the
    training split's (``evaluation=False``) or a report's held-out split's (``evaluation=True``)."""
    events = []
    for record in caplog.records:
        message = record.getMessage()
        for verb, word in (("create", "Creating"), ("reuse", "Reusing")):
            if message.startswith(f"{word} the teacher-logit cache in "):
                folder = message.split(' in ', 1)[1].split(':')[0].split(' (')[0]
                if Path(folder).name.startswith("evaluation-") == evaluation:
                    events.append(f"{verb} {folder}")
    return events


def test_distill_creates_the_cache_beside_the_teacher_and_another_run_of_another_loss_reuses_it(birds, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ltkd_hf")
    out = tmp_path / "run"
    base = [*FAST, *CACHE, "--dataset", str(birds), "--compare_ce_student", "false"]
    distill.main([*base, *TEACHER, "--output_dir", str(out), "--distill_loss", "kd"])
    cache = out / "teacher-logit-cache"
    assert cache_events(caplog) == [f"create {cache}"]
    key = json.loads((cache / KEY_NAME).read_text())
    assert key["teacher"] == tensor_fingerprint(load_teacher(str(out / "teacher")).state_dict())
    assert np.load(cache / LOGITS_NAME, mmap_mode="r").shape == (13, 162, 3)
    assert not (out / "teacher" / "logit-cache").exists()  # the teacher's folder holds the teacher only
    rows = int(np.load(cache / FILLED_NAME).sum())
    assert rows == 4  # the one step's 4 images, filled as the teacher ran on them

    # A second command distils from that teacher with another loss, in its own folder: the cache is reused.
    caplog.clear()
    distill.main([*base, "--output_dir", str(tmp_path / "other"), "--teacher", str(out / "teacher"),
                  "--distill_loss", "dkd"])
    assert cache_events(caplog) == [f"reuse {cache}"]
    assert "4 of this process's 4 teacher rows read from it (100.0%)" in caplog.text  # same seed, same rows
    assert int(np.load(cache / FILLED_NAME).sum()) == rows
    assert not (tmp_path / "other" / "teacher-logit-cache").exists()
    # The card and the report, which a push publishes, name the given teacher's folder, not where it lies on this
    # machine (they named it by its absolute path); the recorded settings keep the path, for the run's own checks.
    student = tmp_path / "other" / "student"
    published = (student / "README.md").read_text() + (student / "report.json").read_text()
    assert str(tmp_path) not in published + (student / "report.md").read_text()
    assert "| Teacher | `teacher [files:" in published
    assert json.loads((student / "report.json").read_text())["metadata"]["teacher"].startswith("teacher [files:")
    recorded = json.loads((student / "config.json").read_text())["ltkd"]["settings"]["teacher"]
    assert recorded.startswith(f"{out / 'teacher'} [files:")

    # The teacher retrained with other weights: its cache is created anew, in the same place.
    caplog.clear()
    distill.main([*base, *TEACHER, "--output_dir", str(out), "--distill_loss", "kd", "--teacher_learning_rate", "0.5",
                  "--overwrite_output_dir", "true"])
    assert "made for another teacher: creating it anew" in caplog.text and cache_events(caplog) == [f"create {cache}"]
    assert json.loads((cache / KEY_NAME).read_text())["teacher"] != key["teacher"]


def test_each_table_seed_creates_one_cache_per_teacher_that_all_its_logit_cells_reuse(birds, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ltkd_hf")
    out = tmp_path / "table"
    table.main([*FAST, *CACHE, *TEACHER, "--dataset", str(birds), "--output_dir", str(out), "--losses", "kd", "ltkd",
                "--sweep", "alpha=1,6", "--teacher_losses", "ce", "logit_adjusted"])
    ce, adjusted = out / "seed0" / "teacher-logit-cache", out / "seed0" / "teacher-logit_adjusted-logit-cache"
    # cells in order: KD from each teacher, then LTKD alpha 1 and 6 from the biased teacher, then from the other;
    # one cache per teacher (one shared folder would be created anew at every change of teacher: 4 creations)
    assert cache_events(caplog) == [f"create {ce}", f"create {adjusted}", f"reuse {ce}", f"reuse {ce}",
                                    f"reuse {adjusted}", f"reuse {adjusted}"]
    teachers = [json.loads((c / KEY_NAME).read_text())["teacher"] for c in (ce, adjusted)]
    assert teachers[0] != teachers[1]
    # each teacher's row in the cells' reports: computed in its first cell, read in the others
    ce_test, adjusted_test = (next(c.glob("evaluation-*")) for c in (ce, adjusted))
    assert cache_events(caplog, evaluation=True) == [f"create {ce_test}", f"create {adjusted_test}", f"reuse {ce_test}",
                                                     f"reuse {ce_test}", f"reuse {adjusted_test}",
                                                     f"reuse {adjusted_test}"]


def test_a_given_teacher_folder_keeps_one_cache_for_every_seed_and_cell(birds, tmp_path):
    from ltkd_hf.hub import save_student
    import timm

    save_student(timm.create_model("test_resnet", num_classes=3, pretrained_cfg_overlay={"input_size": (3, 32, 32)}),
                 tmp_path / "given", label_names=NAMES)
    _, _, plans, _ = table.plan([*FAST, *CACHE, "--dataset", str(birds), "--output_dir", str(tmp_path / "t"),
                                 "--teacher", str(tmp_path / "given"), "--seeds", "0", "1", "--losses", "ce", "kd"])
    folders = {cell.loss: stage.teacher_cache_dir for _, _, stages in plans for cell, stage in stages}
    assert folders == {"ce": None, "kd": tmp_path / "given-logit-cache"}


@pytest.mark.parametrize("program, argv, match", [
    (distill, [*CACHE, "--distill_loss", "reviewkd"],
     r"--teacher_cache true: --distill_loss reviewkd reads the teacher's intermediate features"),
    (distill, [*CACHE, "--distill_loss", "ce"], r"--teacher_cache true: --distill_loss ce .* no teacher runs"),
    (distill, [*CACHE, "--in_memory_data", "false"], r"--teacher_cache true needs --in_memory_data true"),
    (table, [*CACHE, "--losses", "kd", "catkd"],
     r"--teacher_cache true: --losses catkd read the teacher's intermediate features.*without --teacher_cache"),
])
def test_what_the_cache_cannot_serve_is_refused_before_training(birds, tmp_path, program, argv, match):
    with pytest.raises(ValueError, match=match):
        program.plan([*FAST, *TEACHER, "--dataset", str(birds), "--output_dir", str(tmp_path), *argv])
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob(LOGITS_NAME))


def test_only_the_distilling_programs_offer_the_flag():
    with pytest.raises(ValueError, match=r"--teacher_cache: not a setting of ltkd-teacher.*student, student_kd"):
        parse_args("ltkd-teacher", teacher.ARGUMENTS, [*CACHE])


def test_a_cache_the_run_could_not_share_is_refused_before_any_stage_trains(birds, tmp_path, monkeypatch):
    """Both were refused in the distilling stage's train(): on two machines after the teacher and the CE student had
    trained, and a file where the cache's folder goes was a NotADirectoryError traceback from every process. The
    plan checks the folder with `check_cache_folder`, which refuses both."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "teacher-logit-cache").write_text("not a folder")
    with pytest.raises(ValueError, match=rf"in the folder {out / 'teacher-logit-cache'}, which is a file; move or"):
        distill.plan([*FAST, *TEACHER, *CACHE, "--dataset", str(birds), "--output_dir", str(out)])
    assert not list(tmp_path.rglob("*.safetensors"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's on each of two machines of 2 processes
    check_cache_folder(tmp_path / "cache", world_size=2)
    with pytest.raises(ValueError, match=r"teacher_cache=True on 2 machines.*\(--teacher_cache false\)"):
        check_cache_folder(tmp_path / "cache", world_size=4)
