"""The benchmark scripts refuse a flag that their chosen table would ignore (every accepted flag has an effect)."""

from pathlib import Path

import pytest

from scripts import run_script

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv,match", [
    (["--features", "--compile", "inductor"], r"^--compile: the logit losses' table only; drop it with --features"),
    (["--features", "--launches", "--classes", "100", "--groups", "3"],
     r"^--launches --classes --groups: the logit losses' table only"),
    (["--pair", "vgg13-vgg8"], r"^--pair: chooses the pairs of the --features table"),
])
def test_loss_speed_refuses_flags_its_table_ignores(monkeypatch, argv, match):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import loss_speed

    with pytest.raises(ValueError, match=match):
        loss_speed.check_options(loss_speed.build_parser().parse_args(argv))
    # the same flags with the table they belong to are accepted
    accepted = [a for a in argv if a != "--features"] if "--pair" not in argv else ["--features", *argv]
    loss_speed.check_options(loss_speed.build_parser().parse_args(accepted))


@pytest.mark.parametrize("argv,match", [
    (["--compile_backend", "aot_eager"], r"^--compile_backend aot_eager: sets the ltkd-compiled loop, which --loops "
                                         r"bare,ltkd,kd,ltkd-nosync,kd-nosync does not run; add ltkd-compiled"),
    (["--loops", "bare,ltkd", "--cache_dir", "c"], r"^--cache_dir c: sets the ltkd-cached loop, which --loops "
                                                    r"bare,ltkd does not run"),
])
def test_trainer_speed_refuses_a_flag_of_a_loop_it_does_not_run(monkeypatch, argv, match):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import trainer_speed

    with pytest.raises(ValueError, match=match):
        trainer_speed.check_options(trainer_speed.build_parser().parse_args(argv))
    loop = "ltkd-compiled" if "--compile_backend" in argv else "ltkd-cached"
    trainer_speed.check_options(trainer_speed.build_parser().parse_args([*argv, "--loops", f"bare,{loop}"]))


def test_trainer_speed_refuses_an_image_size_its_networks_cannot_take(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import trainer_speed

    for size in ("10", "0"):
        with pytest.raises(ValueError, match=rf"^--image_size {size}: .* need a positive multiple of 4; give e.g. 8"):
            trainer_speed.check_options(trainer_speed.build_parser().parse_args(["--image_size", size]))
    trainer_speed.check_options(trainer_speed.build_parser().parse_args(["--image_size", "8"]))


def test_loss_speed_says_so_in_one_line_before_timing_anything(monkeypatch, capsys):
    code, out, err = run_script(REPO / "benchmarks" / "loss_speed.py", ["--features", "--compile", "inductor"],
                                monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == (
        "loss_speed.py: error: --compile: the logit losses' table only; drop it with --features")
    assert "Traceback" not in err
