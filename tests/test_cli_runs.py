"""Every flag means what it says, as a new user meets it: settings reach only their stages, degenerate runs and
mistakes are refused before training with the flag named on one line, the data is identified by its content, and
reports state only what they know."""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from datasets import Image as ImageFeature
from PIL import Image

from ltkd_hf.cli import distill, evaluate, table, teacher
from ltkd_hf.cli.arguments import DataArguments
from ltkd_hf.cli.stages import load_long_tailed

from scripts import run_script

REPO = Path(__file__).resolve().parents[1]
PLAN = ["--verify_images", "false"]
TEACHER_FAST = ["--max_steps", "1", "--lr_decay_epochs", "none", "--per_device_train_batch_size", "16",
                "--verify_images", "false", "--save_strategy", "no", "--imbalance_factor", "10"]
FAST = [*TEACHER_FAST, "--warmup_epochs", "0"]


def write_folder(root: Path, train=None, test=None) -> None:
    train = train or {"heron": 6, "kingfisher": 4, "osprey": 3}
    test = test or dict.fromkeys(train, 2)
    rng = np.random.default_rng(0)
    for split, counts in (("train", train), ("test", test)):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(root / split / name / f"{i}.png")


def stages_of(argv, program=distill):
    return program.plan(argv)[2]


# -- 1, 2: the student's objective never reaches the teacher; the teacher's has its own flag -------------------------
def test_the_students_objective_does_not_reach_the_teacher_or_the_ce_student(tmp_path):
    stages = stages_of([*PLAN, "--output_dir", str(tmp_path), "--ce_weight", "0", "--ce_logit_adjustment", "1",
                        "--label_smoothing_factor", "0.1", "--distill_loss", "kd", "--warmup_epochs", "2"])
    for name in ("teacher", "student_ce"):
        args = stages[name].args
        assert (args.ce_weight, args.ce_logit_adjustment, args.label_smoothing_factor, args.distill_loss,
                args.warmup_epochs) == (1.0, 0.0, 0.0, "ce", 0.0), name
    student = stages["student"].args
    assert (student.ce_weight, student.ce_logit_adjustment, student.label_smoothing_factor) == (0.0, 1.0, 0.1)
    # named within the run (the folder moved, or spelled another way, is the same run), not by its path
    assert stages["student"].teacher_name.startswith("teacher/ of this run (cifar_resnet8x4, trained here for 30 epochs "
                                                     "at learning rate 0.05 with cross-entropy")


def test_the_teachers_logit_adjustment_is_its_own_flag_and_named(tmp_path):
    stages = stages_of([*PLAN, "--output_dir", str(tmp_path), "--teacher_logit_adjustment", "1"])
    assert stages["teacher"].args.ce_logit_adjustment == 1.0 and stages["student"].args.ce_logit_adjustment == 0.0
    assert "with logit-adjusted cross-entropy (tau 1)" in stages["student"].teacher_name
    assert stages["teacher"].settings["objective"]["ce_logit_adjustment"] == 1.0


# -- 3, 11, fail-late: the table refuses what it cannot run, naming the cell --------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["--losses", "ltkd", "--sweep", "alpah=1,6"],
     r"--sweep alpah=\.\.\.: none of --losses ltkd takes 'alpah'; did you mean 'alpha'\? Sweep a setting"),
    (["--losses", "kd", "dkd", "--sweep", "temprature=2,4"], r"takes 'temprature'; did you mean 'temperature'\?"),
    (["--losses", "ltkd", "--sweep", "seed=1,2"], r"takes 'seed'; sweep a setting of a selected loss"),
    (["--losses", "ltkd", "--sweep", "learning_rate=0.1,0.01"], r"--sweep learning_rate=.*Training settings"),
    (["--seeds", "0", "0"], r"--seeds 0 0: \[0\] given twice"),
    # a swept value is checked as --sweep's, before the data loads: it named --distill_loss_kwargs, and the cell twice
    (["--losses", "ltkd", "--sweep", "alpha=1,-2"], r"^--sweep alpha=-2.0: alpha must be a finite number >= 0"),
    (["--losses", "kd", "dkd", "--sweep", "beta=1,-2"], r"^--sweep beta=-2.0: beta must be a finite number >= 0"),
    (["--losses", "kd", "--sweep", "num_groups=3,x"], r"^--sweep num_groups=x: a number of class groups is a whole"),
    # a swept K beyond the classes, found once the data is loaded, names --sweep (it named --num_groups 11)
    (["--losses", "kd", "--sweep", "num_groups=3,11"],
     r"^seed 0, cell 'KD \(num_groups=11\)': --sweep num_groups=11: num_groups must be an integer in 1\.\.10"),
    (["--compare_ce_student", "false"], r"--compare_ce_student: not a flag of ltkd-table: the table's rows are --losses"),
    # a value or a setting given twice: one folder trained twice and counted as two seeds, or a sweep dropped
    (["--losses", "ltkd", "--sweep", "alpha=1,1.0"], r"--sweep alpha=1,1.0: 1.0 repeats a value already listed"),
    (["--losses", "kd", "--sweep", "num_groups=3,3"], r"--sweep num_groups=3,3: 3 repeats a value already listed"),
    (["--losses", "ltkd", "--sweep", "alpha=1,3", "alpha=2"], r"--sweep alpha=1,3 alpha=2: alpha swept twice"),
    (["--losses", "ltkd", "--sweep", "alpha=1,"], r"--sweep 'alpha=1,': write SETTING=V1,V2"),
    # an unreadable value is the value's fault, not the setting's
    (["--select_metric", "accuracy_tail"], r"--select_metric accuracy_tail: .*--select_on validation, which is off"),
    # it reaches --distill_loss's cells only: with ltkd (the default) not among --losses, the cells trained at T = 4
    (["--losses", "kd", "dkd", "--distill_loss_kwargs", "temperature=2"],
     r"--distill_loss_kwargs: it sets the cells of --distill_loss ltkd, which --losses kd dkd does not run"),
    # a swept setting replaces it in every cell of its loss: the cells trained at beta 1 and 2, never 3
    (["--losses", "kd", "ltkd", "--sweep", "beta=1,2", "--distill_loss_kwargs", "alpha=2,beta=3"],
     r"^--distill_loss_kwargs beta=3\.0: --sweep beta=1,2 sets beta in every ltkd cell, so it would change nothing; "
     r"drop beta from one of them\.$"),
    (["--resume_from_checkpoint", "/nowhere/checkpoint-8"], r"--resume_from_checkpoint /nowhere/checkpoint-8: a table "
                                                             r"has a stage per cell and seed"),
    (["--losses", "ltkd", "--sweep", "alpha=x,6"], r"^--sweep alpha='x': ltkd's alpha takes a float"),
    # --seeds checked as --seeds (it said --seed, which ltkd-table refuses), and a list left empty in a config
    (["--seeds", "-1"], r"^--seeds -1: -1 is not a seed; numpy's seeds are 0 to 2\*\*32 - 1"),
    # what reaches only the distilled students or their teacher changes nothing in a table of CE students
    (["--losses", "ce", "--sweep", "num_groups=3,5"], r"^--sweep num_groups=3,5: sets the class groups of a "
                                                      r"distillation loss, and --losses ce runs none"),
    (["--losses", "ce", "--warmup_epochs", "2"], r"^--warmup_epochs: sets the distilled students or their teacher, "
                                                 r"and --losses ce distils none"),
    (["--losses", "ce", "--teacher_epochs", "2"], r"^--teacher_epochs: sets the distilled students or their teacher"),
    (["--losses", "ce", "--teacher_losses", "logit_adjusted"], r"^--teacher_losses: sets the distilled students"),
    (["--losses", "ce", "--teacher", "/nowhere"], r"^--teacher: sets the distilled students or their teacher"),
    # the table's teachers are --teacher_losses: the ce teacher trained at tau 0 and the flag's 0.5 was dropped
    (["--losses", "kd", "--teacher_logit_adjustment", "0.5"],
     r"^--teacher_logit_adjustment 0\.5: sets the tau of the table's logit-adjusted teacher, and --teacher_losses ce "
     r"trains none"),
    (["--losses", "kd", "--teacher_losses", "logit_adjusted", "--teacher_logit_adjustment", "0"],
     r"^--teacher_logit_adjustment 0: the logit-adjusted teacher would be plain cross-entropy"),
])
def test_the_table_refuses_before_anything_trains(tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        table.plan([*PLAN, "--output_dir", str(tmp_path / "out"), *argv])
    assert not (tmp_path / "out").exists()  # not even an empty folder: the output folder is checked, not made


def test_the_tables_teacher_is_used_for_every_seed(tmp_path):
    from ltkd_hf.hub import save_student
    import timm

    names = [str(i) for i in range(10)]
    save_student(timm.create_model("cifar_resnet8x4", num_classes=10), tmp_path / "given", label_names=names)
    _, _, plans, given = table.plan([*PLAN, "--output_dir", str(tmp_path / "t"), "--teacher", str(tmp_path / "given"),
                                     "--seeds", "0", "1", "--losses", "ce", "kd"])
    assert given is not None
    for _, teachers, cells in plans:
        assert teachers == {}  # no teacher is trained
        kd = next(stage for cell, stage in cells if cell.loss == "kd")
        assert kd.teacher_name.startswith(str(tmp_path / "given"))
    with pytest.raises(ValueError, match="--teacher_losses ce logit_adjusted: trains teachers here, but --teacher"):
        table.plan([*PLAN, "--output_dir", str(tmp_path / "t"), "--teacher", str(tmp_path / "given"),
                    "--teacher_losses", "ce", "logit_adjusted"])
    # how a teacher would be trained here: no teacher is (the table took it and trained nothing with it)
    with pytest.raises(ValueError, match=r"^--teacher_epochs: sets how the teacher is trained here, but --teacher"):
        table.plan([*PLAN, "--output_dir", str(tmp_path / "t"), "--teacher", str(tmp_path / "given"),
                    "--teacher_epochs", "3"])
    # argparse's dashed alias is the same flag: --teacher-epochs 3 was planned and dropped without a word
    with pytest.raises(ValueError, match=r"^--teacher_epochs: sets how the teacher is trained here, but --teacher"):
        table.plan([*PLAN, "--output_dir", str(tmp_path / "t"), "--teacher", str(tmp_path / "given"),
                    "--teacher-epochs", "3"])


def test_the_tables_logit_adjusted_teacher_takes_the_given_tau(tmp_path):
    """--teacher_logit_adjustment 0.5 was dropped: the logit-adjusted teacher trained at tau 1 (and the ce one at 0)."""
    for argv, tau in (([], 1.0), (["--teacher_logit_adjustment", "0.5"], 0.5)):
        _, _, [(_, teachers, cells)], _ = table.plan([*PLAN, "--output_dir", str(tmp_path), "--losses", "kd",
                                                     "--teacher_losses", "ce", "logit_adjusted", *argv])
        assert {name: stage.args.ce_logit_adjustment for name, stage in teachers.items()} == {
            "ce": 0.0, "logit_adjusted": tau}
        assert f"logit-adjusted cross-entropy (tau {tau:g})" in cells[1][1].teacher_name


def test_a_table_of_ce_students_is_not_held_to_the_distillation_warm_up(tmp_path):
    """The config's 5-epoch warm-up refused 2 epochs of a table that distils nothing, and --warmup_epochs 0, the way
    out the message gave, is refused there as changing nothing."""
    _, _, plans, _ = table.plan([*PLAN, "--output_dir", str(tmp_path), "--losses", "ce", "--num_train_epochs", "2",
                                 "--lr_decay_epochs", "none"])
    [(_, teachers, [(cell, stage)])] = plans
    assert teachers == {} and cell.loss == "ce" and stage.args.num_train_epochs == 2
    with pytest.raises(ValueError, match=r"^seed 0, cell 'KD': stage kd: --warmup_epochs 5 is not shorter than the run "
                                         r"\(2 epochs"):
        table.plan([*PLAN, "--output_dir", str(tmp_path), "--losses", "kd", "--num_train_epochs", "2",
                    "--lr_decay_epochs", "none"])


def test_a_table_of_ce_students_takes_num_groups_for_its_tail(tmp_path):
    """--num_groups sets the table's tail column and each row's head/medium/tail; with --losses ce it was refused as
    reaching only distilled students."""
    _, data, plans, _ = table.plan([*PLAN, "--output_dir", str(tmp_path), "--losses", "ce", "--num_groups", "2"])
    [(_, _, [(_, stage)])] = plans
    assert stage.args.num_groups == 2
    counts = np.asarray(data.split_info.class_counts)
    rarest_half = sorted(np.argsort(-counts, kind="stable")[len(counts) // 2:].tolist())
    assert sorted(table.table_tail(data, 2)) == rarest_half and len(table.table_tail(data, 3)) < len(rarest_half)


def test_ltkd_teacher_takes_num_groups_for_its_report(tmp_path):
    """The teacher's report groups its classes by --num_groups, as ltkd-distill's teacher row does; ltkd-teacher
    refused it as reaching only the distilled students."""
    teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path), "--num_groups", "2"])
    report = json.loads((tmp_path / "teacher" / "report.json").read_text())
    counts = np.asarray(report["class_counts"])
    head = set(np.argsort(-counts, kind="stable")[:len(counts) // 2].tolist())
    assert report["groups"]["class_to_group"] == [0 if c in head else 1 for c in range(len(counts))]
    assert {"accuracy_group_0", "accuracy_group_1"} <= set(report["models"]["teacher"])


def test_an_empty_list_in_a_config_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("defaults: demo\nseeds: []\n")
    with pytest.raises(ValueError, match=r"^--seeds: none given, so the table would have nothing to run"):
        table.plan([*PLAN, "--config", str(config), "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("program", [distill, teacher, table])
def test_a_dry_run_makes_no_folder(tmp_path, capsys, program):
    assert program.main([*PLAN, "--output_dir", str(tmp_path / "out"), "--dry_run", "true"]) == {}
    assert f"teacher: train {tmp_path / 'out'}" in capsys.readouterr().out  # planned there, and nothing made
    assert not (tmp_path / "out").exists()


def test_a_given_teacher_replaces_the_teacher_stage(tmp_path, monkeypatch):
    from ltkd_hf.cli.arguments import GivenTeacherArguments
    from ltkd_hf.cli.stages import given_teacher, teacher_cache_folder
    from ltkd_hf.hub import save_student
    import timm

    save_student(timm.create_model("cifar_resnet8x4", num_classes=10), tmp_path / "given",
                 label_names=[str(i) for i in range(10)])
    stages = stages_of([*PLAN, "--output_dir", str(tmp_path / "o"), "--teacher", str(tmp_path / "given")])
    assert "teacher" not in stages and stages["student"].teacher_name.startswith(str(tmp_path / "given") + " [files:")
    # one teacher however the folder is spelled: the students' recorded settings must not tell them apart
    monkeypatch.chdir(tmp_path)
    relative = stages_of([*PLAN, "--output_dir", "o", "--teacher", "./given/"])
    assert relative["student"].teacher_name == stages["student"].teacher_name
    # --teacher . put its logit cache inside the teacher's folder (as "-logit-cache"), changing its fingerprint
    monkeypatch.chdir(tmp_path / "given")
    _, name = given_teacher(GivenTeacherArguments(teacher="."))
    assert teacher_cache_folder(tmp_path / "o" / "student", name) == tmp_path / "given-logit-cache"
    with pytest.raises(ValueError, match=r"--teacher_epochs: sets how the teacher is trained here, but --teacher"):
        stages_of([*PLAN, "--output_dir", str(tmp_path / "o"), "--teacher", str(tmp_path / "given"),
                   "--teacher_epochs", "3"])
    # the Hub flags push the student of a run with a given teacher (they were refused as teacher-stage flags); without
    # --push_to_hub they are refused as settings of a push that does not happen
    with pytest.raises(ValueError, match=r"--hub_model_id alice/student: a setting of the push, and --push_to_hub"):
        stages_of([*PLAN, "--output_dir", str(tmp_path / "o"), "--teacher", str(tmp_path / "given"),
                   "--hub_model_id", "alice/student"])


def test_a_hub_teacher_or_start_is_recorded_and_loaded_at_its_commit(tmp_path, fake_hub):
    """A Hub teacher was recorded by its id alone: pushed again with other weights, the finished student of the old
    one was reused, and its card named the new one. The teacher and an hf-hub: --student_init are now recorded, and
    loaded, at the commit their revision points at; a --student_init folder with its files' fingerprint."""
    import timm
    import torch
    from huggingface_hub import HfApi

    from ltkd_hf.hub import save_student

    api = HfApi(endpoint=fake_hub.url, token=fake_hub.token)
    api.create_repo("alice/teacher")
    seen = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = timm.create_model("cifar_resnet8x4", num_classes=10)
        save_student(model, tmp_path / "t", label_names=[str(i) for i in range(10)])
        api.upload_folder(folder_path=str(tmp_path / "t"), repo_id="alice/teacher")
        head = fake_hub.repos["alice/teacher"].head
        _, _, stages, given, _ = distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"),
                                              "--teacher", "hf-hub:alice/teacher"])
        assert stages["student"].teacher_name == f"hf-hub:alice/teacher@{head}"
        assert torch.equal(given.stem[0].weight, model.stem[0].weight)
        starts = stages_of([*PLAN, "--output_dir", str(tmp_path / "o"), "--student_init", "hf-hub:alice/teacher"])
        assert starts["student"].settings["model"]["init"] == f"hf-hub:alice/teacher@{head}"
        local = stages_of([*PLAN, "--output_dir", str(tmp_path / "o"), "--student_init", f"local-dir:{tmp_path / 't'}"])
        seen.append(local["student"].settings["model"]["init"])
        assert seen[-1].startswith(f"local-dir:{tmp_path / 't'} [files:")
    assert seen[0] != seen[1]  # the folder saved again is another start


def test_ltkd_eval_takes_a_hub_model_as_the_other_flags_spell_it(tmp_path, fake_hub):
    """--model hf-hub:alice/x was "neither a folder nor a reachable Hub model" (only the bare id worked), and
    --teacher alice/x said nothing of the hf-hub: prefix it needed."""
    import timm
    from huggingface_hub import HfApi

    from ltkd_hf.hub import save_student

    save_student(timm.create_model("cifar_resnet8x4", num_classes=10), tmp_path / "bare",
                 label_names=[str(i) for i in range(10)])
    api = HfApi(endpoint=fake_hub.url, token=fake_hub.token)
    api.create_repo("alice/bare")
    api.upload_folder(folder_path=str(tmp_path / "bare"), repo_id="alice/bare")
    head = fake_hub.repos["alice/bare"].head
    common = ["--dataset", "builtin:digits", "--imbalance_factor", "10"]
    local = evaluate.main(["--model", str(tmp_path / "bare"), *common, "--output_dir", str(tmp_path / "local")])
    for spec in ("hf-hub:alice/bare", f"hf-hub:alice/bare@{head}", "alice/bare"):
        report = evaluate.main(["--model", spec, *common, "--output_dir", str(tmp_path / spec.replace("/", "_"))])
        assert (report["per_class"], report["ece"]) == (local["per_class"], local["ece"]), spec  # the same weights
    with pytest.raises(ValueError, match=r"--model hf-hub:alice/bare@: source='hf-hub:alice/bare@' is not a valid"):
        evaluate.main(["--model", "hf-hub:alice/bare@", *common])
    with pytest.raises(FileNotFoundError, match=r"^--teacher alice/bare: it does not exist .*a Hub model needs the "
                                                r"'hf-hub:' prefix: 'hf-hub:alice/bare'"):
        stages_of([*PLAN, "--output_dir", str(tmp_path / "o"), "--teacher", "alice/bare"])


# -- 5, 7, 8, 12 and the unclear messages: refused before training, the flag named -------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["--student", "local-dir:/ckpt"], r"--student 'local-dir:/ckpt' is a checkpoint.*--student_init local-dir:/ckpt"),
    (["--teacher_architecture", "hf-hub:org/x"], r"--teacher_architecture 'hf-hub:org/x' is a checkpoint"),
    # a pretrained tag was dropped without a word: the architecture trained from its own initialisation
    (["--student", "resnet10t.c3_in1k"], r"--student resnet10t\.c3_in1k: the tag 'c3_in1k' names pretrained weights.*"
                                         r"pass --student_init resnet10t\.c3_in1k .*, or --student resnet10t\.$"),
    (["--teacher_architecture", "resnet18.a1_in1k"], r"pass --teacher_init resnet18\.a1_in1k to start from those"),
    # the flag names the source: the library's "source='none'" beside it named a Python argument
    (["--student", "none"], r"^--student none: it is not a registered timm architecture"),
    (["--num_train_epochs", "0"], r"--num_train_epochs 0.0 \(and no --max_steps\) trains nothing"),
    (["--num_train_epochs", "3", "--lr_decay_epochs", "none"],
     r"stage student: --warmup_epochs 5 is not shorter than the run \(3 epochs"),
    (["--max_steps", "2", "--lr_decay_epochs", "none"],
     r"stage student: --warmup_epochs 5 is not shorter than the run"),
    # the demo's decay at epochs 20 and 25 would never come in a shorter stage: trained at the full rate throughout
    (["--teacher_epochs", "25"], r"^stage teacher: --lr_decay_epochs \[20\.0, 25\.0\]: \[25\.0\] come at or after "
                                 r"the end of the run \(25 epochs\)"),
    (["--num_train_epochs", "20", "--warmup_epochs", "0"],
     r"^stage student_ce: --lr_decay_epochs \[20\.0, 25\.0\]: \[20\.0, 25\.0\] come at or after the end of the run "
     r"\(20 epochs\).*pass --lr_decay_epochs none\.$"),
    (["--input_size", "0"], r"--input_size 0: pass a side of at least 8 pixels"),
    (["--class_order_seed", "-1"], r"--class_order_seed -1: a seed of numpy's legacy generator"),
    (["--imbalance_factor", "0.5"], r"--imbalance_factor 0.5: rho"),
    # at rho 1 every class keeps its images: the long tail's shape would change nothing
    (["--imbalance_factor", "1", "--lt_profile", "step"], r"^--lt_profile step: with --imbalance_factor 1 every class "
     r"keeps all its training images, so the long tail's shape \(--lt_profile, --lt_exponent, --class_order_seed\) "
     r"changes nothing; drop it, or pass --imbalance_factor > 1 to make the training split long-tailed\.$"),
    (["--imbalance_factor", "1", "--lt_exponent", "paper"], r"^--lt_exponent paper: with --imbalance_factor 1 "),
    (["--imbalance_factor", "1", "--class_order_seed", "3"], r"^--class_order_seed 3: with --imbalance_factor 1 "),
    (["--teacher_epoch", "3"], r"--teacher_epoch: unknown flag; did you mean --teacher_epochs\?"),
    (["--label_smoothing", "0.1"], r"--label_smoothing: unknown flag; did you mean --label_smoothing_factor\?"),
    (["--do_train", "true"], r"--do_train True is not supported by DistillationTrainer"),
])
def test_mistakes_are_refused_naming_the_flag(tmp_path, argv, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        distill.plan([*PLAN, "--output_dir", str(tmp_path), *argv])


def test_a_cross_entropy_student_is_its_own_comparison_row(tmp_path):
    """--distill_loss ce trained two identical CE students, and the table showed one: both rows were "student (CE)".
    As with --distill_loss kd and the KD row, the distilled student is that row."""
    _, _, stages, _, _ = distill.plan([*PLAN, "--output_dir", str(tmp_path), "--distill_loss", "ce"])
    assert list(stages) == ["teacher", "student_kd", "student"]
    _, _, stages, _, _ = distill.plan([*PLAN, "--output_dir", str(tmp_path), "--distill_loss", "ltkd"])
    assert list(stages) == ["teacher", "student_ce", "student_kd", "student"]
    # with no KD student either, no stage distils: a warm-up of the distillation term would change nothing
    ce = [*PLAN, "--output_dir", str(tmp_path), "--distill_loss", "ce"]
    no_kd = [*ce, "--compare_kd_student", "false"]
    with pytest.raises(ValueError, match=r"^--warmup_epochs 3: ramps up a distillation term, and --distill_loss ce "
                                         r"without the KD comparison student \(--compare_kd_student false\) distils "
                                         r"no student, so it would change nothing; drop it, or choose a distillation "
                                         r"loss\.$"):
        distill.plan([*no_kd, "--warmup_epochs", "3"])
    _, _, stages, _, _ = distill.plan(no_kd)  # the config's own warm-up is not the user's flag
    assert list(stages) == ["teacher", "student"]
    assert stages["student"].args.warmup_epochs == 0  # the CE student records no warm-up (the config's is 5)
    _, _, stages, _, _ = distill.plan([*ce, "--compare_kd_student", "true", "--warmup_epochs", "3"])
    assert stages["student_kd"].args.warmup_epochs == 3  # with the KD student, it reaches that student
    assert stages["student"].args.warmup_epochs == 0  # and that student only: the CE student has nothing to ramp


def test_the_teacher_program_has_its_own_flags_and_refuses_the_students(tmp_path):
    with pytest.raises(ValueError, match=r"--num_train_epochs: not a setting of ltkd-teacher.*--teacher_epochs|"
                                         r"--num_train_epochs: not a setting of ltkd-teacher"):
        teacher.plan([*PLAN, "--output_dir", str(tmp_path), "--num_train_epochs", "1"])
    for flag, value in (("--student", "x"), ("--distill_loss", "kd"), ("--teacher", "x"), ("--ce_weight", "0")):
        with pytest.raises(ValueError, match=rf"{flag}: not a setting of ltkd-teacher"):
            teacher.plan([*PLAN, "--output_dir", str(tmp_path), flag, value])
    # another program's own flag is named with its program: "it applies to: other programs" named none
    for flag, owner in (("--sweep", "ltkd-table"), ("--batch_size", "ltkd-eval")):
        with pytest.raises(ValueError, match=rf"^{flag}: not a flag of ltkd-teacher; it is a flag of {owner} \(see its "
                                             r"--help\); drop it here\.$"):
            teacher.plan([*PLAN, "--output_dir", str(tmp_path), flag, "1"])
    # the fix names the teacher's epochs flag too: ltkd-teacher offers no --num_train_epochs
    with pytest.raises(ValueError, match=r"--max_steps 2; drop --max_steps and set the epochs \(--num_train_epochs; "
                                         r"--teacher_epochs for the recipes' teacher\)"):
        teacher.plan([*PLAN, "--output_dir", str(tmp_path), "--max_steps", "2"])
    _, _, stage, _, _ = teacher.plan([*PLAN, "--output_dir", str(tmp_path), "--teacher_epochs", "2",
                                      "--lr_decay_epochs", "1"])
    assert stage.args.num_train_epochs == 2  # the epochs flag it reads is the one it offers


def test_the_command_lines_errors_name_flags_not_python_arguments(tmp_path):
    """A pickled --teacher_checkpoint said "pass allow_unsafe_pickle=True", and a Hub dataset offline said "pass
    source='DIR'" without naming --dataset (it was no one-line error either: a ConnectionError went unwrapped)."""
    import timm
    import torch

    torch.save(timm.create_model("cifar_resnet8x4", num_classes=10).state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match=r"--teacher cifar_resnet8x4: --teacher_checkpoint '.*t\.pth' is a pickle.*"
                                         r"if you trust its origin, pass --allow_unsafe_pickle true\.$"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--teacher", "cifar_resnet8x4",
                      "--teacher_checkpoint", str(tmp_path / "t.pth")])
    with pytest.raises(ConnectionError, match=r"^--dataset alice/not-cached: Could not load the Hub dataset .* "
                                              r"where the Hub is reachable and pass --dataset DIR, or"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", "alice/not-cached"])


# two of the six test images are copies of training images
CAVEAT = "2 of the 6 test images are copies of train images (the same file's bytes), so their accuracy is not held out"


def write_copied_birds(root: Path) -> None:
    write_folder(root)
    for bird, image in (("heron", "0"), ("osprey", "1")):
        (root / "test" / bird / "0.png").unlink()
        shutil.copy(root / "train" / bird / f"{image}.png", root / "test" / bird / f"copy{image}.png")


def test_held_out_images_that_are_training_images_are_named(tmp_path, caplog, capsys):
    """A file copied into both splits was scored as held out, without a word; then with a warning in the log alone,
    while report.json, report.md, the card and the printed table showed the numbers as held out."""
    birds = tmp_path / "birds"
    write_copied_birds(birds)
    argv = ["--output_dir", str(tmp_path / "o"), "--dataset", str(birds), "--imbalance_factor", "1"]
    with caplog.at_level(logging.WARNING, logger="ltkd_hf.cli"):
        assert distill.plan([*argv, "--verify_images", "false"])[1].caveats == ()
        assert "copies" not in caplog.text  # the check reads every image: --verify_images false skips it
        distill.plan(argv)
    assert re.search(r"2 of the 6 test images of --dataset .*birds are copies of train images \(e\.g\. file "
                     r"'.*test/heron/copy0\.png' is file '.*train/heron/0\.png'\), so their accuracy is not held "
                     r"out", caplog.text)
    # what the run writes and prints says it too, without this machine's paths (the card is published)
    capsys.readouterr()
    teacher.main([*TEACHER_FAST, *argv, "--verify_images", "true"])
    out = tmp_path / "o" / "teacher"
    assert json.loads((out / "report.json").read_text())["metadata"]["caveats"] == [CAVEAT]
    assert f"- **caveats**: {CAVEAT}\n" in (out / "report.md").read_text()
    card = (out / "README.md").read_text()
    assert f"**Caveats about these numbers:**\n\n- {CAVEAT}.\n" in card and str(tmp_path) not in card
    assert f"\nCaveat: {CAVEAT}.\n" in capsys.readouterr().out


def test_ltkd_eval_names_the_test_images_the_model_trained_on(tmp_path, capsys, caplog):
    """ltkd-eval scored a model on test images copied from the images it trained on, and its report called them held
    out. The training split is rebuilt as the model records it: a copy of a training image its long-tailed split
    left out is held out."""
    birds, out = tmp_path / "birds", tmp_path / "o"
    write_folder(birds)
    teacher.main([*TEACHER_FAST, "--output_dir", str(out), "--dataset", str(birds), "--imbalance_factor", "3"])
    trained = json.loads((out / "teacher" / "config.json").read_text())["ltkd"]["settings"]["data"]["class_counts"]
    # n_c = int(N_c * rho^(-c / (C - 1))) of the 6 / 4 / 3 training images: [6, 2, 1], so images are left out
    assert trained == [int(n * 3 ** (-c / 2)) for c, n in enumerate((6, 4, 3))] == [6, 2, 1]
    raw = load_long_tailed(DataArguments(dataset=str(birds), imbalance_factor=3)).train
    kept = {Path(item["path"]).name for item in raw.cast_column("image", ImageFeature(decode=False))["image"]
            if "kingfisher" in item["path"]}
    left_out = ({f"{i}.png" for i in range(4)} - kept).pop()
    (birds / "test" / "heron" / "0.png").unlink()
    shutil.copy(birds / "train" / "heron" / "0.png", birds / "test" / "heron" / "copy.png")  # trained on
    (birds / "test" / "kingfisher" / "0.png").unlink()
    shutil.copy(birds / "train" / "kingfisher" / left_out, birds / "test" / "kingfisher" / "copy.png")  # never seen
    caveat = CAVEAT.replace("2 of the 6", "1 of the 6")
    common = ["--model", str(out / "teacher"), "--dataset", str(birds), "--output_dir", str(tmp_path / "eval")]
    capsys.readouterr()
    evaluate.main(common)
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["metadata"]["caveats"] == [caveat]
    assert f"- **caveats**: {caveat}\n" in (tmp_path / "eval" / "report.md").read_text()
    assert f"\nCaveat: {caveat}.\n" in capsys.readouterr().out
    evaluate.main([*common, "--verify_images", "false"])  # reads the test split alone, and says nothing
    assert "caveats" not in json.loads((tmp_path / "eval" / "report.json").read_text())["metadata"]
    assert "Caveat" not in capsys.readouterr().out
    shutil.rmtree(birds / "train")  # a folder that kept its test split alone is scored, and says what it cannot check
    with caplog.at_level(logging.WARNING, logger="ltkd_hf.cli"):
        evaluate.main(common)
    assert re.search(r"The training split the model records cannot be rebuilt from .*birds \(.*no training split "
                     r"'train'.*\): its test images are not compared with its training images", caplog.text)


def test_a_table_on_copied_held_out_images_says_so_under_its_title(tmp_path):
    write_copied_birds(tmp_path / "birds")
    table.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "t"), "--dataset", str(tmp_path / "birds"), "--imbalance_factor",
                "1", "--verify_images", "true", "--losses", "ce"])
    title = json.loads((tmp_path / "t" / "table.json").read_text())["title"]
    assert title.startswith("Top-1 accuracy (%) on the test split") and title.endswith(f"). Caveat: {CAVEAT}.")
    assert (tmp_path / "t" / "table.md").read_text().startswith(title + "\n")


def test_data_mistakes_name_the_flag_and_the_folder(tmp_path, caplog):
    write_folder(tmp_path / "one", train={"heron": 4}, test={"heron": 2})
    # one class: the fix is a second class folder (it said "Cannot tell the label column ... Pass --label_column")
    with pytest.raises(ValueError, match=r"^--dataset .*one: .*one/test: holds the class folder \['heron'\] alone; a "
                                         r"classifier needs at least 2 classes \(an image folder is "
                                         r"<split>/<class>/<image>, one folder per class\)\.$"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "one")])
    write_folder(tmp_path / "extra", test={"heron": 2, "kingfisher": 2, "osprey": 2, "puffin": 2})
    with pytest.raises(ValueError, match=r"--dataset .*extra: classes \['puffin'\] have no training images"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "extra")])
    # a balanced folder kept as it is (the default rho 1 of --dataset runs): its groups split the classes by index
    write_folder(tmp_path / "even", train={"heron": 4, "kingfisher": 4, "osprey": 4})
    with pytest.raises(ValueError, match=r"--imbalance_factor 1: every class of --dataset .*even keeps 4 training "
                                         r"images, so there is no head or tail"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "even")])
    distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "even"),
                  "--imbalance_factor", "4"])  # made long-tailed: 4, 2, 1
    write_folder(tmp_path / "uneven", test={"heron": 2, "kingfisher": 1, "osprey": 2})
    with caplog.at_level("WARNING", logger="ltkd_hf.cli"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "uneven")])
    assert "The test split of --dataset" in caplog.text and "is not balanced: 1 to 2 images per class" in caplog.text
    # a saved DatasetDict is no image folder: the folder layout hint misled
    from datasets import Dataset, DatasetDict, Image as ImageFeature
    picture = str(next((tmp_path / "even" / "train" / "heron").iterdir()))
    floats = Dataset.from_dict({"image": [picture] * 2, "label": [0.5, 1.5]}).cast_column("image", ImageFeature())
    DatasetDict(train=floats, test=floats).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"--dataset .*saved: label column 'label' has type") as err:
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "saved")])
    assert "image folder needs" not in str(err.value)
    # neither split: it said "no split found for ['test', 'train'] (looked for ['train'])", and split= first
    DatasetDict(holdout=floats).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(ValueError, match=r"--dataset .*odd: .*has splits \['holdout'\]: no training split 'train', "
                                         r"and no labelled held-out split \(looked for \['test', 'validation', 'valid', "
                                         r"'val'\]\)\. Pass --test_split <the held-out split name>, and --train_split "
                                         r"<the training split's>;"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "odd")])
    write_folder(tmp_path / "two", train={"heron": 4, "kingfisher": 2})
    with pytest.raises(ValueError, match=r"--num_groups 3: num_groups must be an integer in 1..2"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path / "o"), "--dataset", str(tmp_path / "two")])
    with pytest.raises(FileNotFoundError, match=r"--model /nonexistent: no such folder"):
        evaluate.main(["--model", "/nonexistent", "--dataset", "builtin:digits"])


def test_one_line_error_and_exit_2_without_a_traceback(tmp_path, monkeypatch, capsys):
    code, _, err = run_script(REPO / "recipes" / "run_distill.py", ["--input_size", "0", "--output_dir", str(tmp_path)],
                              monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines() == ["run_distill.py: error: --input_size 0: pass a side of at least 8 pixels, or "
                                        "none."]


# -- 4 (data identity): the same files are the same data; edited files are not ------------------------------------------
def test_the_data_is_identified_by_its_content(tmp_path):
    write_folder(tmp_path / "birds")
    out = tmp_path / "run"
    argv = [*TEACHER_FAST, "--output_dir", str(out), "--imbalance_factor", "1", "--per_device_train_batch_size", "4"]
    teacher.main([*argv, "--dataset", str(tmp_path / "birds")])
    again = teacher.plan([*argv, "--dataset", str(tmp_path / "birds") + "/"])[2]  # another spelling, same folder
    assert again.finished
    moved = tmp_path / "moved"
    (tmp_path / "birds").rename(moved)  # the same files at another path: cosmetic
    assert teacher.plan([*argv, "--dataset", str(moved)])[2].finished
    image = moved / "train" / "osprey" / "1.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)  # overwritten in place
    with pytest.raises(ValueError, match=r"made with other data: the dataset's files differ .*fingerprint \(data.fingerprint\)"):
        teacher.plan([*argv, "--dataset", str(moved)])


def test_a_diverged_stage_is_not_saved_as_finished(tmp_path):
    """A run whose loss went NaN wrote NaN weights as a finished stage; the next run reused it ("same settings") and
    both ended in the report's "probabilities must be finite" about softmax, a message for the Python API."""
    write_folder(tmp_path / "birds")
    out = tmp_path / "run"
    argv = [*TEACHER_FAST, "--output_dir", str(out), "--imbalance_factor", "1", "--per_device_train_batch_size", "4",
            "--dataset", str(tmp_path / "birds"), "--max_steps", "4", "--teacher_learning_rate", "1e8",
            "--max_grad_norm", "0"]
    for _ in range(2):  # the same command again trains again, and stops again
        with pytest.raises(ValueError, match=r"^stage teacher: The training loss is non-finite \(NaN/inf\) at step "
                                             r"\d.*lower --teacher_learning_rate \(now 1e\+08\), or clip the gradients "
                                             r"with --max_grad_norm \(now 0, off"):
            teacher.main(argv)
        assert not (out / "teacher" / "model.safetensors").exists()


def test_an_image_that_cannot_be_read_mid_run_is_one_line(tmp_path, monkeypatch, capsys):
    """With --verify_images false a damaged image ended the run in PIL's UnidentifiedImageError traceback."""
    write_folder(tmp_path / "birds")
    (tmp_path / "birds" / "train" / "heron" / "0.png").write_bytes(b"not a png")
    code, _, err = run_script(REPO / "recipes" / "run_teacher.py",
                              [*TEACHER_FAST, "--dataset", str(tmp_path / "birds"), "--imbalance_factor", "1",
                               "--per_device_train_batch_size", "4", "--max_steps", "4", "--output_dir",
                               str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.split("\n")[-2] == (
        f"run_teacher.py: error: cannot identify image file '{tmp_path / 'birds' / 'train' / 'heron' / '0.png'}': an "
        "image could not be read while training; replace or delete the file (--verify_images true, the default, finds "
        "every such file before anything trains).")


def test_ltkd_eval_scores_held_out_images_alone(tmp_path, capsys):
    """A model that records its training split needs only the held-out images: a folder holding test/ alone was
    refused for its missing train/, and a folder of class folders (which loads as the split 'train') could not be
    named at all ("--test_split train" was taken as the held-out name, and the training split then missing)."""
    write_folder(tmp_path / "birds")
    teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "run"), "--imbalance_factor", "1",
                  "--per_device_train_batch_size", "4", "--dataset", str(tmp_path / "birds")])
    model = ["--model", str(tmp_path / "run" / "teacher")]
    full = evaluate.main([*model, "--dataset", str(tmp_path / "birds"), "--output_dir", str(tmp_path / "full")])
    shutil.copytree(tmp_path / "birds" / "test", tmp_path / "held" / "test")
    alone = evaluate.main([*model, "--dataset", str(tmp_path / "held"), "--output_dir", str(tmp_path / "alone")])
    assert (alone["per_class"], alone["ece"]) == (full["per_class"], full["ece"])
    classes = tmp_path / "held" / "test"  # class folders, no split folders
    with pytest.raises(ValueError, match=r"has splits \['train'\], none of them \['test', 'validation', 'valid', "
                                         r"'val'\]\. Pass --test_split <the held-out split name>; a folder of class "
                                         r"folders loads as the split 'train'"):
        evaluate.main([*model, "--dataset", str(classes), "--output_dir", str(tmp_path / "named")])
    named = evaluate.main([*model, "--dataset", str(classes), "--test_split", "train",
                           "--output_dir", str(tmp_path / "named")])
    assert (named["per_class"], named["ece"]) == (full["per_class"], full["ece"])
    assert capsys.readouterr().out.endswith(f"Report (report.md, report.json, plots): {tmp_path / 'named'}\n")
    facts = json.loads((tmp_path / "named" / "report.json").read_text())["metadata"]
    assert facts["evaluated on"] == f"{classes}, split train"
    with pytest.raises(ValueError, match=r"^--train_split: --model .* records the training split it was made with"):
        evaluate.main([*model, "--dataset", str(tmp_path / "birds"), "--train_split", "train", "--test_split", "test"])
    # the split it trained on, however the folder is spelt, is not held out: it was scored and called the test split
    with pytest.raises(ValueError, match=r"^--test_split train: --model .* was trained on the split 'train' of .*birds, "
                                         r"so its accuracy there is not held out \(the report would call its training "
                                         r"images the test split\); pass the held-out split, e.g\. --test_split test\.$"):
        evaluate.main([*model, "--dataset", str(tmp_path / "held" / ".." / "birds"), "--test_split", "train",
                       "--output_dir", str(tmp_path / "own")])
    assert not (tmp_path / "own").exists()


def test_a_given_teacher_trained_on_the_test_split_is_refused(tmp_path, caplog):
    """A --teacher (or a checkpoint a model starts from) trained on the split a run scores as its test split taught
    the students the test images' labels, and was accepted; a teacher trained on another construction of the
    training split is named in a warning."""
    birds = ["--dataset", str(tmp_path / "birds")]
    write_folder(tmp_path / "birds", test={"heron": 5, "kingfisher": 3, "osprey": 2})
    for folder, splits in (("on-test", ["--train_split", "test", "--test_split", "train"]), ("on-train", [])):
        teacher.main([*TEACHER_FAST, *birds, *splits, "--output_dir", str(tmp_path / folder), "--imbalance_factor", "1",
                      "--per_device_train_batch_size", "4"])
    run = [*FAST, *birds, "--imbalance_factor", "1", "--output_dir", str(tmp_path / "out")]
    for program in (distill, table):
        with pytest.raises(ValueError, match=r"^--teacher .*on-test/teacher: was trained on the split 'test' of "
                                             r".*birds, which this run scores as its test split, so the students "
                                             r"would learn the test images' labels from it"):
            program.plan([*run, "--teacher", str(tmp_path / "on-test" / "teacher")])
    # and so is a checkpoint a model starts from: the fine-tuned student would have been taught the test images too
    for program, argv in ((distill, run), (teacher, [*TEACHER_FAST, *birds, "--imbalance_factor", "1"])):
        flag = "--student_init" if program is distill else "--teacher_init"
        with pytest.raises(ValueError, match=rf"^{flag} .*on-test/teacher: was trained on the split 'test'"):
            program.plan([*argv, "--output_dir", str(tmp_path / "out"), flag, str(tmp_path / "on-test" / "teacher")])
    given = ["--teacher", str(tmp_path / "on-train" / "teacher")]
    with caplog.at_level(logging.WARNING, logger="ltkd_hf.cli"):
        distill.plan([*run, *given])
        assert "another construction" not in caplog.text  # the split it was trained on
        distill.plan([*run, *given, "--imbalance_factor", "2"])
    assert re.search(r"--teacher .*on-train/teacher was trained on another construction of the split 'train' of "
                     r".*birds \(every training image kept \(imbalance factor 1.*\), not this run's \(.*imbalance "
                     r"factor 2,", caplog.text)
    assert not (tmp_path / "out").exists()


# -- 6: a report states only what the folder records -------------------------------------------------------------------
def test_run_eval_states_what_the_folder_records_and_only_that(tmp_path, caplog):
    import timm
    from ltkd_hf.hub import save_student

    out = tmp_path / "run"
    distill.main([*FAST, "--output_dir", str(out), "--compare_ce_student", "false", "--lt_seed", "7", "--seed", "3",
                  "--imbalance_factor", "4"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate.main(["--model", str(out / "student"), "--dataset", "builtin:digits", "--output_dir",
                       str(tmp_path / "e")])
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # torch's warning, on every CPU evaluation
    facts = json.loads((tmp_path / "e" / "report.json").read_text())["metadata"]
    assert facts["training seed"] == 3 and "LT seed 7" in facts["training split"]
    assert "imbalance factor 4" in facts["training split"] and facts["teacher"].startswith("teacher/ of this run (cifar_resnet8x4")
    assert "LTKD" in facts["objective"] or "ltkd" in facts["objective"].lower()
    # --max_steps 1 ends inside the first epoch: the weights after that step, not "last-epoch weights"; the folder's
    # load_best_model_at_end and max_steps, as the run's own report says
    assert facts["evaluated"] == "final weights (after step 1)"
    run_report = json.loads((out / "student" / "report.json").read_text())["metadata"]
    assert run_report["evaluated"] == facts["evaluated"]
    # a checkpoint is where its trainer_state.json puts it, not the run's last weights
    from transformers import TrainerState

    checkpoint = tmp_path / "copy" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(out / "student" / name, checkpoint)
    TrainerState(global_step=2, max_steps=8, epoch=0.5, num_train_epochs=2).save_to_json(
        str(checkpoint / "trainer_state.json"))
    evaluate.main(["--model", str(checkpoint), "--dataset", "builtin:digits", "--output_dir", str(tmp_path / "c")])
    evaluated = json.loads((tmp_path / "c" / "report.json").read_text())["metadata"]["evaluated"]
    assert evaluated == "checkpoint at step 2 of 8, epoch 0.5 of 2"

    # a config of another split (one config serves every program) was used for nothing without a word
    config = tmp_path / "other.yaml"
    config.write_text("defaults: demo\nimbalance_factor: 100\nlt_seed: 7\n")
    with caplog.at_level(logging.WARNING, logger="ltkd_hf"):
        evaluate.main(["--config", str(config), "--model", str(out / "student"), "--output_dir", str(tmp_path / "e")])
    said = [r.getMessage() for r in caplog.records if "is not the split" in r.getMessage()]
    assert said == [f"--config {config}: imbalance_factor 100 is not the split --model {out / 'student'} was trained "
                    "on (imbalance_factor 4.0); the report's groups come from the model's own record."]
    assert json.loads((tmp_path / "e" / "report.json").read_text())["metadata"] == facts  # the model's split

    written = json.loads((tmp_path / "e" / "report.json").read_text())
    assert facts["evaluated on"] == "builtin:digits, split test"
    assert written["label_names"] == [str(i) for i in range(10)]  # the per-class lists' classes

    save_student(timm.create_model("cifar_resnet8x4", num_classes=10), tmp_path / "bare",
                 label_names=[str(i) for i in range(10)])
    bare = ["--model", str(tmp_path / "bare"), "--dataset", "builtin:digits", "--output_dir", str(tmp_path / "b")]
    # nothing recorded: the groups came from the default rho (100) without a word, whatever the model trained on
    with pytest.raises(ValueError, match=r"--imbalance_factor: --model .*bare records no training split, so the "
                                         r"report's groups are rebuilt from --dataset builtin:digits"):
        evaluate.main(bare)
    evaluate.main([*bare, "--imbalance_factor", "10"])
    facts = json.loads((tmp_path / "b" / "report.json").read_text())["metadata"]
    for key in ("training split", "teacher", "objective", "training seed", "evaluated"):
        assert facts[key] == "not recorded", key

    # The folder's own split gives the groups: a flag that would make another one changes nothing, so it is refused.
    with pytest.raises(ValueError, match=r"--imbalance_factor: --model .* records the training split it was made with"):
        evaluate.main(["--model", str(out / "student"), "--dataset", "builtin:digits", "--output_dir",
                       str(tmp_path / "e"), "--imbalance_factor", "5"])
    # A report is never written over another model's, nor into a saved model's folder; a re-run replaces its own.
    for folder, match in ((tmp_path / "b", r"holds the report of \["), (out / "teacher", "holds a saved model")):
        with pytest.raises(ValueError, match=rf"--output_dir {folder}: {match}"):
            evaluate.main(["--model", str(out / "student"), "--dataset", "builtin:digits", "--output_dir", str(folder)])
    before = (out / "teacher" / "report.json").read_text()
    evaluate.main(["--model", str(out / "student"), "--dataset", "builtin:digits", "--output_dir", str(tmp_path / "e")])
    assert (out / "teacher" / "report.json").read_text() == before


def test_another_number_of_groups_gets_its_card(tmp_path):
    """--num_groups 5 passed every check, trained every stage, then failed writing the card (it asked for head /
    medium / tail accuracy, which five groups do not have)."""
    out = tmp_path / "run"
    distill.main([*FAST, "--output_dir", str(out), "--compare_ce_student", "false", "--num_groups", "5"])
    card = (out / "student" / "README.md").read_text()
    report = json.loads((out / "student" / "report.json").read_text())
    rows = [f"| group_{g} | {100 * report['models']['student (LTKD)'][f'accuracy_group_{g}']:.2f} |" for g in range(5)]
    assert all(row in card for row in rows), rows


# -- 12: ltkd-teacher --push_to_hub checks the token first, then pushes the teacher --------------------------------------
def test_the_teacher_program_pushes_after_checking_the_token(tmp_path, fake_hub, monkeypatch, caplog):
    out = tmp_path / "run"
    argv = [*TEACHER_FAST, "--output_dir", str(out), "--push_to_hub", "true", "--hub_model_id", "alice/demo-teacher"]
    with pytest.raises(ValueError, match=r"--hub_token: .* refused the token \(HTTP 401\)"):
        teacher.main([*argv, "--hub_token", "hf_wrong"])
    assert not (out / "teacher").exists()  # refused before anything trained
    with pytest.raises(ValueError, match=r"--hub_model_id someone-else/x: the token belongs to 'alice'"):
        teacher.main([*TEACHER_FAST, "--output_dir", str(out), "--push_to_hub", "true", "--hub_model_id", "someone-else/x",
                      "--hub_token", fake_hub.token])
    fake_hub.server.role = "read"
    with pytest.raises(ValueError, match="is read-only"):
        teacher.main([*argv, "--hub_token", fake_hub.token])
    fake_hub.server.role = "write"
    teacher.main([*argv, "--hub_token", fake_hub.token])
    assert "model.safetensors" in fake_hub.repos["alice/demo-teacher"].files
    # Without --hub_model_id: the run folder's name in the token owner's namespace, where the Hub creates it; the card
    # and the log name the repo the push went to
    with caplog.at_level(logging.INFO, logger="ltkd_hf"):
        teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "mine"), "--push_to_hub", "true",
                      "--hub_token", fake_hub.token])
    card = fake_hub.repos["alice/mine-teacher"].files["README.md"].decode()
    assert 'timm.create_model("hf-hub:alice/mine-teacher", pretrained=True)' in card and "<your-username>" not in card
    assert f"Pushed {tmp_path / 'mine' / 'teacher'} to the Hub as alice/mine-teacher" in caplog.text


def test_push_is_refused_at_once_when_offline(tmp_path):
    with pytest.raises(ValueError, match=r"--push_to_hub true .*offline mode is on"):
        distill.plan([*PLAN, "--output_dir", str(tmp_path), "--push_to_hub", "true", "--hub_token", "hf_x"])


def test_a_second_table_in_the_same_folder_says_which_rows_it_replaces(tmp_path, caplog):
    (tmp_path / "table.json").write_text(json.dumps({"rows": {"KD": {"seeds": 3}, "LTKD (alpha=1)": {"seeds": 3}}}))
    with caplog.at_level("WARNING", logger="ltkd_hf.cli"):
        table._say_what_is_replaced(tmp_path, {"KD": {"seeds": 3}, "LTKD (beta=6)": {"seeds": 3}})
    assert "its rows ['LTKD (alpha=1)'] are not in this command's table" in caplog.text
    assert "over more seeds" not in caplog.text
    caplog.clear()
    # a re-run with --seeds 3 alone replaced a three-seed table by a one-seed one without a word
    with caplog.at_level("WARNING", logger="ltkd_hf.cli"):
        table._say_what_is_replaced(tmp_path, {"KD": {"seeds": 1}, "LTKD (alpha=1)": {"seeds": 3}})
    assert "its rows ['KD'] were over more seeds than this command's" in caplog.text
