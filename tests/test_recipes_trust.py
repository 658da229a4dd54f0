"""Runs you can trust: reproducible seeds, resume/overwrite as the transformers examples, every mistake caught
before training, --help, run_eval refusing a model of other classes, and the demo config only for the demo."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
from safetensors.torch import load_file

from ltkd_hf.cli import distill as run_distill
from ltkd_hf.cli import evaluate as run_eval
from ltkd_hf.cli import teacher as run_teacher
from ltkd_hf.cli.parsing import default_config, parse_args

from ltkd_hf.hub import save_student

from image_folders import write_folder
from scripts import run_script

pytestmark = pytest.mark.heavy  # scheduled first (conftest.py)

REPO = Path(__file__).resolve().parents[1]

# Two optimizer steps per stage on the demo data: enough to make weights depend on the seed.
TEACHER_FAST = ["--max_steps", "2", "--lr_decay_epochs", "none", "--imbalance_factor", "10", "--save_strategy", "steps",
                "--save_steps", "1", "--per_device_train_batch_size", "16"]
FAST = [*TEACHER_FAST, "--warmup_epochs", "0"]  # ltkd-distill: the distillation ramp shorter than 2 steps


def teacher_weights(out: Path) -> dict:
    return load_file(out / "teacher" / "model.safetensors")


def test_the_same_command_gives_bit_identical_weights(tmp_path):
    for run in ("a", "b"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / run)])
    a, b = teacher_weights(tmp_path / "a"), teacher_weights(tmp_path / "b")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "c"), "--seed", "1"])
    c = teacher_weights(tmp_path / "c")
    assert any(not np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)  # the seed is what decides


def test_resume_false_path_and_overwrite(tmp_path, caplog):
    out = tmp_path / "run"
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(out)])
    finished = teacher_weights(out)
    # An interrupted stage: only its checkpoints are left.
    (out / "teacher" / "model.safetensors").unlink()
    (out / "teacher" / "config.json").unlink()
    state = out / "teacher" / "checkpoint-2" / "trainer_state.json"
    stamp = state.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="ltkd_hf.cli"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(out)])  # default: resume the matching checkpoint (no new step)
    assert f"Stage teacher: resuming from {out / 'teacher' / 'checkpoint-2'}" in caplog.text  # it said nothing
    assert state.stat().st_mtime_ns == stamp
    resumed = teacher_weights(out)
    assert all(np.array_equal(finished[k].numpy(), resumed[k].numpy()) for k in finished)

    (out / "teacher" / "model.safetensors").unlink()
    (out / "teacher" / "config.json").unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="ltkd_hf.cli"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(out), "--resume_from_checkpoint", "false"])
    assert "checkpoint-2 (a fresh start: --resume_from_checkpoint false)" in caplog.text  # it gave no reason
    assert state.stat().st_mtime_ns != stamp

    # the teacher's settings by the teacher's flags (it read as if --learning_rate, the students', had changed), and
    # device_augmentation by --in_memory_data, which sets it (the flag itself is refused)
    with pytest.raises(ValueError, match=r"learning_rate \(schedule.learning_rate, set by --teacher_learning_rate "
                                         r"\(default --learning_rate\)\): 0.05 in .*teacher, 0.1 now"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(out), "--teacher_learning_rate", "0.1"])
    with pytest.raises(ValueError, match=r"device_augmentation \(schedule.device_augmentation, set by "
                                         r"--in_memory_data\): false in .*teacher, true now"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(out), "--in_memory_data", "true"])
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(out), "--teacher_learning_rate", "0.1", "--overwrite_output_dir", "true"])
    settings = json.loads((out / "teacher" / "config.json").read_text())["ltkd"]["settings"]
    assert settings["schedule"]["learning_rate"] == 0.1

    with pytest.raises(FileNotFoundError, match="--resume_from_checkpoint '.*nowhere' is not a folder"):
        run_distill.main([*FAST, "--output_dir", str(out), "--resume_from_checkpoint", str(tmp_path / "nowhere"),
                          "--teacher", str(out / "teacher")])


def test_a_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "run" / "teacher").mkdir(parents=True)
    (tmp_path / "run" / "teacher" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no finished stage or checkpoint of ltkd_hf"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "run")])
    assert (tmp_path / "run" / "teacher" / "notes.txt").read_text() == "mine"


def test_a_save_a_kill_cut_short_is_skipped_and_the_last_whole_checkpoint_resumed(tmp_path):
    """A kill while checkpoint-2 was being written left it without trainer_state.json (Trainer writes that last): the
    re-run stopped with a wrong diagnosis ("records no settings") or failed reading it after pre-flight. Now the
    re-run is the run that resumes checkpoint-1 with no checkpoint-2 at all."""
    cut, gone = tmp_path / "cut", tmp_path / "gone"
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(cut)])
    finished = teacher_weights(cut)
    shutil.copytree(cut / "teacher", gone / "teacher")
    for stage in (cut / "teacher", gone / "teacher"):
        (stage / "model.safetensors").unlink()
        (stage / "config.json").unlink()
    (cut / "teacher" / "checkpoint-2" / "trainer_state.json").unlink()
    (cut / "teacher" / ".ltkd-tmp-killed").mkdir()  # the staging folder of a killed atomic write
    shutil.rmtree(gone / "teacher" / "checkpoint-2")
    for out in (cut, gone):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(out)])
    resumed, reference = teacher_weights(cut), teacher_weights(gone)
    assert all(np.array_equal(resumed[k].numpy(), reference[k].numpy()) for k in reference)
    assert (cut / "teacher" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (cut / "teacher" / ".ltkd-tmp-killed").exists()

    # Killed while saving its first checkpoint: nothing to resume, the stage trains again from the start.
    stage = cut / "teacher"
    (stage / "model.safetensors").unlink()
    (stage / "config.json").unlink()
    shutil.rmtree(stage / "checkpoint-2")
    (stage / "checkpoint-1" / "trainer_state.json").unlink()
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(cut)])
    again = teacher_weights(cut)
    assert all(np.array_equal(finished[k].numpy(), again[k].numpy()) for k in finished)


def test_a_stage_saved_with_the_model_alone_is_not_resumed_without_its_optimizer(tmp_path):
    """A re-run after a kill resumed a --save_only_model checkpoint without a word, with a new optimizer, the
    schedule from the first step and fresh random states: another teacher, reported as the run's."""
    out, flags = tmp_path / "run", [*TEACHER_FAST, "--save_only_model", "true"]
    run_teacher.main([*flags, "--output_dir", str(out)])
    finished = teacher_weights(out)
    stage = out / "teacher"
    (stage / "model.safetensors").unlink()
    (stage / "config.json").unlink()
    shutil.rmtree(stage / "checkpoint-2")  # killed after its first checkpoint
    with pytest.raises(ValueError, match=r"teacher/checkpoint-1 holds the model's weights only \(saved with "
                                         r"--save_only_model true\).* train again from the start "
                                         r"\(--resume_from_checkpoint false\)"):
        run_teacher.main([*flags, "--output_dir", str(out)])
    assert (stage / "checkpoint-1").is_dir() and not {"checkpoint-2", "model.safetensors"} & set(os.listdir(stage))
    run_teacher.main([*flags, "--output_dir", str(out), "--resume_from_checkpoint", "false"])
    again = teacher_weights(out)
    assert all(np.array_equal(finished[k].numpy(), again[k].numpy()) for k in finished)


def test_a_long_setting_that_differs_is_shown_where_it_differs(tmp_path):
    """The teacher's description is long: cut at 60 characters, both sides read the same and hid the difference."""
    from ltkd_hf.provenance import StaleOutputError, check_settings

    name = "/a/long/output/folder/teacher (cifar_resnet8x4, trained here from scratch, learning rate {}, 240 epochs)"
    (tmp_path / "config.json").write_text(json.dumps({"ltkd": {"settings": {"teacher": name.format(0.05)}}}))
    with pytest.raises(StaleOutputError) as err:
        check_settings(tmp_path, {"teacher": name.format(0.1)})
    message = str(err.value)
    assert 'learning rate 0.05, 240 epoc' in message and 'learning rate 0.1, 240 epochs' in message


def test_the_teacher_program_resumes_the_checkpoint_it_is_given(tmp_path):
    """ltkd-teacher ignored --resume_from_checkpoint: true on an empty folder, or a missing folder, trained afresh."""
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint true, but .*teacher holds no checkpoint"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "a"), "--resume_from_checkpoint", "true"])
    with pytest.raises(FileNotFoundError, match=r"--resume_from_checkpoint '/nowhere/checkpoint-8' is not a folder"):
        run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "a"), "--resume_from_checkpoint",
                          "/nowhere/checkpoint-8"])
    assert not (tmp_path / "a" / "teacher").exists()
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "b")])
    checkpoint = tmp_path / "b" / "teacher" / "checkpoint-2"
    run_teacher.main([*TEACHER_FAST, "--output_dir", str(tmp_path / "c"), "--resume_from_checkpoint", str(checkpoint)])
    # checkpoint-2 is the last step: resumed, nothing more trains (a fresh run would have saved checkpoint-1 again)
    assert not (tmp_path / "c" / "teacher" / "checkpoint-1").exists()
    assert all(np.array_equal(teacher_weights(tmp_path / "b")[k].numpy(), v.numpy())
               for k, v in teacher_weights(tmp_path / "c").items())


@pytest.mark.parametrize(
    "flags,error,match",
    [
        (["--distill_loss", "kd", "--distill_loss_kwargs", "rebalance=false"], ValueError,
         "--distill_loss kd does not take 'rebalance'; it accepts temperature"),
        (["--distill_loss", "dist", "--distill_loss_kwargs", "temperature=2"], ValueError,
         "--distill_loss dist does not take 'temperature'; it accepts beta .*gamma .*tau"),
        (["--distill_loss_kwargs", "alpha"], ValueError, "write key=value pairs"),
        (["--student", "not_a_model"], ValueError, "--student not_a_model: .*not a .*timm"),
        (["--per_device_eval_batch_size", "0"], ValueError, "--per_device_eval_batch_size must be >= 1, got 0"),
        (["--teacher_checkpoint", "t.safetensors"], ValueError, "--teacher_checkpoint 't.safetensors' needs --teacher"),
        # flags that would change nothing in this command
        (["--allow_unsafe_pickle", "true"], ValueError, "--allow_unsafe_pickle true: .* there is no --teacher"),
        (["--in_memory_max_gib", "0.5"], ValueError, "--in_memory_max_gib 0.5 bounds the splits of --in_memory_data"),
        (["--lt_profile", "step", "--lt_exponent", "paper"], ValueError, "--lt_exponent paper: the step profile has no"),
        # two flags that contradict each other: the resume was dropped and every stage trained afresh
        (["--overwrite_output_dir", "true", "--resume_from_checkpoint", "true"], ValueError,
         "--overwrite_output_dir true trains every stage from scratch, and --resume_from_checkpoint true asks to "
         "resume; pass only one of them"),
    ],
)
def test_mistakes_fail_before_any_training(tmp_path, flags, error, match):
    with pytest.raises(error, match=match):
        run_distill.main([*FAST, "--output_dir", str(tmp_path / "out"), *flags])
    assert not list((tmp_path / "out").glob("*/checkpoint-*"))


@pytest.mark.parametrize(
    "classes,match",
    [
        (11, "--teacher .*: The teacher predicts 11 classes but the dataset has num_classes=10"),
        (10, "--teacher .*: The teacher's label names differ from the dataset's"),
    ],
)
def test_a_teacher_of_other_classes_fails_before_training(tmp_path, classes, match):
    names = [f"digit_{i}" for i in range(classes)]
    save_student(timm.create_model("cifar_resnet8x4", num_classes=classes), tmp_path / "teacher", label_names=names)
    with pytest.raises(ValueError, match=match):
        run_distill.main([*FAST, "--output_dir", str(tmp_path / "out"), "--teacher", str(tmp_path / "teacher")])
    assert not (tmp_path / "out" / "student").exists()


def test_a_class_without_test_images_fails_before_training(tmp_path):
    write_folder(tmp_path / "birds", test_classes=("heron", "kingfisher"))
    with pytest.raises(ValueError, match=r"classes \['osprey'\] have no test images"):
        run_distill.main([*FAST, "--dataset", str(tmp_path / "birds"), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "teacher").exists()


def test_a_corrupt_image_is_named_before_training(tmp_path):
    write_folder(tmp_path / "birds")
    broken = tmp_path / "birds" / "train" / "osprey" / "1.png"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated PNG
    with pytest.raises(ValueError, match=f"image at file '{broken}' cannot be decoded"):
        run_distill.main([*FAST, "--dataset", str(tmp_path / "birds"), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "teacher").exists()


@pytest.mark.parametrize("recipe", ["run_distill.py", "run_teacher.py", "run_eval.py"])
def test_help_works(recipe, monkeypatch, capsys):
    code, out, err = run_script(REPO / "recipes" / recipe, ["--help"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert "--output_dir" in out and out.startswith(f"usage: {recipe}")


def test_help_says_whose_defaults_it_shows(capsys):
    """--help showed the demo's --imbalance_factor 20 as the default, while a run with --dataset gets 1."""
    for argv, config, rho in (([], "demo", "20.0"), (["--dataset", "my_images"], "base", "1.0")):
        with pytest.raises(SystemExit):
            parse([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"The defaults shown are the '{config}' config's" in text
        assert f"1 keeps the split as it is. (default: {rho})" in text


def test_run_eval_refuses_a_model_of_other_classes(tmp_path):
    names = [f"digit_{i}" for i in range(10)]
    save_student(timm.create_model("cifar_resnet8x4", num_classes=10), tmp_path / "named", label_names=names)
    with pytest.raises(ValueError, match=r"predicts 10 classes \['digit_0'.*--dataset builtin:digits has 10 classes \['0'"):
        run_eval.main(["--model", str(tmp_path / "named"), "--dataset", "builtin:digits", "--output_dir", str(tmp_path)])
    write_folder(tmp_path / "birds")
    four = ["heron", "kingfisher", "osprey", "puffin"]
    save_student(timm.create_model("cifar_resnet8x4", num_classes=4), tmp_path / "four", label_names=four)
    with pytest.raises(ValueError, match=r"predicts 4 classes .* has 3 classes"):
        run_eval.main(["--model", str(tmp_path / "four"), "--dataset", str(tmp_path / "birds"), "--output_dir",
                       str(tmp_path)])


def test_run_eval_refuses_data_the_training_programs_refuse(tmp_path):
    """A class without test images was scored on the others (tail 100 from one class); a truncated test image
    was a 30-line OSError traceback. ltkd-distill refused both, naming the class or the file."""
    three = ["heron", "kingfisher", "osprey"]
    recorded = {"ltkd": {"settings": {"data": {"class_counts": [6, 4, 3], "label_names": three}}}}  # as a run's
    save_student(timm.create_model("cifar_resnet8x4", num_classes=3), tmp_path / "model", label_names=three,
                 extra_config=recorded)
    evaluate = ["--model", str(tmp_path / "model"), "--output_dir", str(tmp_path / "e")]
    write_folder(tmp_path / "partial", test_classes=("heron", "osprey"))
    with pytest.raises(ValueError, match=r"classes \['kingfisher'\] have no test images, so their accuracy cannot be"):
        run_eval.main([*evaluate, "--dataset", str(tmp_path / "partial")])
    write_folder(tmp_path / "broken")
    cut = tmp_path / "broken" / "test" / "osprey" / "1.png"
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"test split's image at file '{cut}' cannot be decoded") as err:
        run_eval.main([*evaluate, "--dataset", str(tmp_path / "broken")])
    assert str(err.value).endswith("(--verify_images false skips this check)")  # ltkd-eval's flag too


def test_run_eval_loads_what_timm_saves_checks_its_names_and_names_each_mistake(tmp_path):
    """Each was a traceback, a report scored on the wrong classes, or a message naming no flag."""
    from timm.models import save_for_hf

    write_folder(tmp_path / "birds")
    three = ["heron", "kingfisher", "osprey"]
    data = ["--dataset", str(tmp_path / "birds"), "--imbalance_factor", "1"]
    # timm's own saver records model_args.num_classes: transformers' wrapper got it twice (a TypeError)
    save_for_hf(timm.create_model("cifar_resnet8x4", num_classes=3), tmp_path / "timm", safe_serialization=True,
                model_config={"label_names": three})
    report = run_eval.main(["--model", str(tmp_path / "timm"), *data, "--output_dir", str(tmp_path / "e")])
    assert report["num_samples"] == 6
    # names kept only in pretrained_cfg (as timm keeps them) were not checked: a dataset of other classes was scored
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    config["pretrained_cfg"]["label_names"] = config.pop("label_names")
    config["model_args"].pop("num_classes")
    shutil.copytree(tmp_path / "timm", tmp_path / "cfg-names")
    (tmp_path / "cfg-names" / "config.json").write_text(json.dumps(config))
    write_folder(tmp_path / "other", test_classes=("heron", "kingfisher", "wren"))
    shutil.rmtree(tmp_path / "other" / "train" / "osprey")
    shutil.copytree(tmp_path / "other" / "train" / "heron", tmp_path / "other" / "train" / "wren")
    with pytest.raises(ValueError, match=r"predicts 3 classes \['heron', 'kingfisher', 'osprey'\], but --dataset .* "
                                         r"has 3 classes \['heron', 'kingfisher', 'wren'\]"):
        run_eval.main(["--model", str(tmp_path / "cfg-names"), "--dataset", str(tmp_path / "other"),
                       "--imbalance_factor", "1", "--output_dir", str(tmp_path / "o")])
    # a folder without weights, a config.json that is no JSON: transformers' OSError, json's bare message
    (tmp_path / "empty").mkdir()
    shutil.copy(tmp_path / "timm" / "config.json", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"--model .*empty: .*no file named model.safetensors"):
        run_eval.main(["--model", str(tmp_path / "empty"), *data, "--output_dir", str(tmp_path / "o")])
    (tmp_path / "empty" / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"--model .*empty: .*config.json is not valid JSON"):
        run_eval.main(["--model", str(tmp_path / "empty"), *data, "--output_dir", str(tmp_path / "o")])
    # a file as the report folder was Trainer's FileExistsError traceback, after loading everything
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"--output_dir .*a-file: is a file; pass a folder"):
        run_eval.main(["--model", str(tmp_path / "timm"), *data, "--output_dir", str(tmp_path / "a-file")])
    with pytest.raises(ValueError, match=r"^--output_dir '': an empty name would write into the current folder"):
        run_eval.main(["--model", str(tmp_path / "timm"), *data, "--output_dir", ""])
    # the same model spelt another way was refused as "another model's report"
    run_eval.main(["--model", f"{tmp_path / 'timm'}/", *data, "--output_dir", str(tmp_path / "e")])
    # the default --num_groups on a 2-class model named no flag ("got 3", which the user never typed)
    save_student(timm.create_model("cifar_resnet8x4", num_classes=2), tmp_path / "two", label_names=three[:2])
    write_folder(tmp_path / "pair", test_classes=three[:2])
    shutil.rmtree(tmp_path / "pair" / "train" / "osprey")
    with pytest.raises(ValueError, match=r"--num_groups 3 \(the default\): num_groups must be an integer in 1..2"):
        run_eval.main(["--model", str(tmp_path / "two"), "--dataset", str(tmp_path / "pair"), "--imbalance_factor",
                       "1", "--output_dir", str(tmp_path / "o")])
    # --imbalance_factor from a config counts as given, as every other setting does
    (tmp_path / "eval.yaml").write_text(f"dataset: {tmp_path / 'birds'}\nimbalance_factor: 1\n")
    run_eval.main(["--config", str(tmp_path / "eval.yaml"), "--model", str(tmp_path / "timm"), "--output_dir",
                   str(tmp_path / "c")])


def parse(argv):
    return parse_args("ltkd-distill", run_distill.ARGUMENTS, argv, default=default_config).values


def test_the_demo_config_applies_only_to_the_demo():
    data, *_, config = parse(["--dataset", "my_images"])
    assert data.imbalance_factor == 1 and config.lr_decay_epochs is None  # the base recipe, not the demo's
    assert "ltkd-demo" not in config.output_dir
    data, *_, config = parse([])
    assert data.imbalance_factor == 20 and config.lr_decay_epochs == [20, 25]  # the demo
    *_, config = parse(["--lr_decay_epochs", "none", "--max_steps", "5"])
    assert config.lr_decay_epochs is None and config.max_steps == 5
    *_, config = parse(["--report_to", "none"])
    assert config.report_to in ([], ["none"], "none")  # a value of its own, not an unset setting


def test_loss_settings_from_yaml_and_the_command_line(tmp_path):
    path = tmp_path / "dist.yaml"
    path.write_text("distill_loss: dist\ndistill_loss_kwargs: {gamma: 2, tau: 3.0}\noutput_dir: out\n")
    *_, config = parse(["--config", str(path)])
    assert config.distill_loss_kwargs == {"gamma": 2, "tau": 3.0}
    assert config.loss_settings() == {"beta": 1.0, "gamma": 2, "tau": 3.0}
    *_, config = parse(["--config", str(path), "--distill_loss", "bkd", "--distill_loss_kwargs",
                        "effective_number_beta=0.99,temperature=3"])
    assert config.distill_loss_kwargs == {"effective_number_beta": 0.99, "temperature": 3.0}
    path.write_text("distill_loss: ltkd\ndistill_loss_kwargs: {gamma: 2}\n")
    with pytest.raises(ValueError, match="--distill_loss ltkd does not take 'gamma'; it accepts temperature"):
        parse(["--config", str(path)])
