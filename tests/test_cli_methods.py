"""Each method's settings per pair: the paper configs' ``methods:`` key, resolved for every cell of ``ltkd-table``
and for ``ltkd-distill --distill_loss X``, against the authors' published values written here; the command line's
precedence over it, and the refusals when a config is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ltkd_hf.cli import distill, table
from ltkd_hf.cli.parsing import load_config, parse_args

REPO = Path(__file__).resolve().parents[1]
CIFAR = sorted((REPO / "recipes" / "configs").glob("cifar100_lt_r*.yaml"))
TINY = sorted((REPO / "recipes" / "configs").glob("tinyimagenet_lt_r*.yaml"))
DEMO_DATA = ["--dataset", "builtin:digits", "--verify_images", "false"]

# The authors' CIFAR-100 values, pair -> (CAT-KD: CAT_loss_weight, CAM_RESOLUTION, IF_NORMALIZE), from
# github.com/GzyAftermath/CAT-KD configs/cifar100/CAT_KD/*.yaml; DKD's beta, from github.com/megvii-research/mdistiller
# configs/cifar100/dkd/*.yaml; ReviewKD's --kd-loss-weight, from github.com/dvlab-research/ReviewKD
# CIFAR-100/script/reviewKD.sh, None where they publish none (the configs use 5.0, labelled "our choice").
AUTHORS = {
    "resnet32x4_resnet8x4": ((15.0, 2, False), 8.0, 5.0),
    "resnet32x4_shufflenet_v1": ((600.0, 4, True), 8.0, 5.0),
    "wrn_40_2_shufflenet_v1": ((80.0, 4, True), 8.0, 5.0),
    "wrn_40_2_wrn_40_1": ((1.5, 2, False), 6.0, 5.0),
    "resnet50_mobilenet_v2": ((40.0, 2, True), 8.0, None),
    "vgg13_mobilenet_v2": ((15.0, 2, True), 6.0, None),
    "vgg13_vgg8": ((4.5, 2, False), 6.0, None),
}
OUR_REVIEWKD_WEIGHT = 5.0
# Shared by every pair: CAT-KD trains without warm-up (its distiller has no ramp); ReviewKD's --kd-warm-up 20;
# mdistiller's DKD alpha 1, T 4, warm-up 20.
CATKD_WARMUP, REVIEWKD_WARMUP, DKD = 0, 20, {"alpha": 1.0, "temperature": 4.0, "warmup": 20}


def pair_of(path: Path) -> str:
    return re.sub(r"^(cifar100|tinyimagenet)_lt_r\d+_", "", path.stem)


def expected(pair: str) -> dict[str, tuple[dict, float]]:
    """Each loss's full settings and warm-up for ``pair``, from the tables above."""
    (weight, resolution, normalize), beta, review = AUTHORS[pair]
    return {
        "catkd": ({"catkd_loss_weight": weight, "cam_resolution": resolution, "normalize_cams": normalize},
                  CATKD_WARMUP),
        "reviewkd": ({"reviewkd_loss_weight": review or OUR_REVIEWKD_WEIGHT}, REVIEWKD_WARMUP),
        "dkd": ({"alpha": DKD["alpha"], "beta": beta, "temperature": DKD["temperature"]}, DKD["warmup"]),
    }


def plan_cells(config: Path, out: Path, *extra: str) -> dict:
    """``ltkd-table --config config --losses catkd reviewkd dkd --dry_run`` on the demo data: loss -> its stage."""
    _, _, plans, _ = table.plan(["--config", str(config), *DEMO_DATA, "--output_dir", str(out),
                                 "--losses", "catkd", "reviewkd", "dkd", *extra])
    ((_, _, stages),) = plans
    return {cell.loss: stage for cell, stage in stages}


def test_every_cifar_pair_is_listed():
    assert len(CIFAR) == 21 and {pair_of(p) for p in CIFAR} == set(AUTHORS)


@pytest.mark.parametrize("config", CIFAR + TINY, ids=lambda p: p.stem)
def test_each_cell_takes_the_authors_settings_of_its_pair(config, tmp_path):
    extra = ["--test_split", "test", "--input_size", "none"] if config in TINY else []  # the demo data's
    stages = plan_cells(config, tmp_path, *extra)
    for loss, (settings, warmup) in expected(pair_of(config)).items():
        args, recorded = stages[loss].args, stages[loss].settings["objective"]
        assert args.distill_loss == loss and args.warmup_epochs == warmup, (loss, args.warmup_epochs)
        assert recorded["warmup_epochs"] == warmup  # what --dry_run prints and the folder records
        taken = {k: recorded["distill_loss_kwargs"][k] for k in settings}
        assert taken == settings and {k: args.loss_settings()[k] for k in settings} == settings, loss


def test_a_pair_without_published_reviewkd_settings_says_our_choice():
    for path in CIFAR:
        line = next(line for line in path.read_text().splitlines() if line.strip().startswith("reviewkd:"))
        published = AUTHORS[pair_of(path)][2] is not None
        assert ("# our choice" in line) != published, path.name


def test_dry_run_prints_each_cells_resolved_settings(tmp_path, capsys):
    config = REPO / "recipes" / "configs" / "cifar100_lt_r100_wrn_40_2_shufflenet_v1.yaml"
    table.main(["--config", str(config), *DEMO_DATA, "--output_dir", str(tmp_path), "--losses", "catkd", "dkd",
                "--dry_run", "true"])
    printed = capsys.readouterr().out
    catkd, dkd = printed.split("catkd: train ")[1].split("dkd: train ")
    for line in ("objective.distill_loss_kwargs.catkd_loss_weight = 80.0", "objective.distill_loss_kwargs.cam_resolution = 4",
                 "objective.distill_loss_kwargs.normalize_cams = true", "objective.warmup_epochs = 0"):
        assert line in catkd
    assert "objective.distill_loss_kwargs.beta = 8.0" in dkd and "objective.warmup_epochs = 20" in dkd


def test_the_default_loss_keeps_its_settings(tmp_path):
    """No methods.ltkd: the recipes' LTKD cell is what it was (the loss's defaults, the recipe's warm-up)."""
    config = REPO / "recipes" / "configs" / "cifar100_lt_r100_vgg13_vgg8.yaml"
    _, _, plans, _ = table.plan(["--config", str(config), *DEMO_DATA, "--output_dir", str(tmp_path),
                                 "--losses", "ltkd"])
    ((_, _, ((_, stage),)),) = plans
    assert stage.args.distill_loss_kwargs == {} and stage.args.warmup_epochs == 20


def test_ltkd_distill_takes_methods_of_its_loss_and_the_command_line_wins(tmp_path):
    config = REPO / "recipes" / "configs" / "cifar100_lt_r20_resnet32x4_shufflenet_v1.yaml"
    base = ["--config", str(config), *DEMO_DATA, "--output_dir", str(tmp_path), "--compare_ce_student", "false"]
    _, _, stages, _, _ = distill.plan([*base, "--distill_loss", "catkd"])
    student = stages["student"].args
    assert student.distill_loss_kwargs == {"catkd_loss_weight": 600.0, "cam_resolution": 4, "normalize_cams": True}
    assert student.warmup_epochs == 0
    assert stages["teacher"].args.distill_loss == "ce"  # the teacher's stage takes none of it

    _, _, stages, _, _ = distill.plan([*base, "--distill_loss", "catkd", "--distill_loss_kwargs",
                                       "catkd_loss_weight=7", "--warmup_epochs", "3"])
    student = stages["student"].args
    assert student.distill_loss_kwargs == {"catkd_loss_weight": 7.0, "cam_resolution": 4, "normalize_cams": True}
    assert student.warmup_epochs == 3

    _, _, stages, _, _ = distill.plan([*base])  # the config's own loss, LTKD, has no methods entry
    assert stages["student"].args.distill_loss_kwargs == {} and stages["student"].args.warmup_epochs == 20


def test_table_command_line_wins_over_methods(tmp_path):
    config = REPO / "recipes" / "configs" / "cifar100_lt_r10_wrn_40_2_shufflenet_v1.yaml"
    stages = plan_cells(config, tmp_path, "--warmup_epochs", "5", "--distill_loss", "catkd",
                        "--distill_loss_kwargs", "cam_resolution=8")
    assert {loss: stage.args.warmup_epochs for loss, stage in stages.items()} == dict.fromkeys(stages, 5)
    assert stages["catkd"].args.distill_loss_kwargs == {"catkd_loss_weight": 80.0, "cam_resolution": 8,
                                                        "normalize_cams": True}
    # --distill_loss_kwargs belongs to --distill_loss's cells: DKD keeps its own
    assert stages["dkd"].args.distill_loss_kwargs == {"alpha": 1.0, "temperature": 4.0, "beta": 8.0}
    # a swept value replaces the pair's, the rest of the pair's settings stay
    _, _, plans, _ = table.plan(["--config", str(config), *DEMO_DATA, "--output_dir", str(tmp_path / "sweep"),
                                 "--losses", "catkd", "--sweep", "cam_resolution=1,2"])
    swept = [stage.args.distill_loss_kwargs for _, stage in plans[0][2]]
    assert swept == [{"catkd_loss_weight": 80.0, "cam_resolution": r, "normalize_cams": True} for r in (1, 2)]


def test_methods_merge_through_defaults_key_by_key_over_the_top_level(tmp_path):
    (tmp_path / "recipe.yaml").write_text(
        "defaults: none\nwarmup_epochs: 9\nnum_train_epochs: 30\n"
        "methods:\n  dkd: {distill_loss_kwargs: {alpha: 2.0, temperature: 3.0}, warmup_epochs: 7}\n"
        "  kd: {distill_loss_kwargs: {temperature: 2.0}}\n"
    )
    pair = tmp_path / "pair.yaml"
    pair.write_text("defaults: recipe.yaml\ndistill_loss: dkd\ndistill_loss_kwargs: {beta: 1.0}\n"
                    "methods:\n  dkd: {distill_loss_kwargs: {beta: 5.0, alpha: 9.0}}\n")
    assert load_config(str(pair))["methods"] == {
        "dkd": {"distill_loss_kwargs": {"alpha": 9.0, "temperature": 3.0, "beta": 5.0}, "warmup_epochs": 7},
        "kd": {"distill_loss_kwargs": {"temperature": 2.0}},
    }
    _, _, stages, _, _ = distill.plan(["--config", str(pair), *DEMO_DATA, "--output_dir", str(tmp_path / "out"),
                                       "--compare_ce_student", "false"])
    # methods.dkd over the config's top-level distill_loss_kwargs and warmup_epochs
    assert stages["student"].args.distill_loss_kwargs == {"beta": 5.0, "alpha": 9.0, "temperature": 3.0}
    assert stages["student"].args.warmup_epochs == 7
    plain = tmp_path / "plain.yaml"
    plain.write_text("defaults: recipe.yaml\n")
    _, _, stages, _, _ = distill.plan(["--config", str(plain), *DEMO_DATA, "--output_dir", str(tmp_path / "out"),
                                       "--compare_ce_student", "false", "--distill_loss", "kd"])
    assert stages["student"].args.distill_loss_kwargs == {"temperature": 2.0}
    assert stages["student"].args.warmup_epochs == 9  # no methods.kd.warmup_epochs: the config's


@pytest.mark.parametrize("methods, message", [
    ("{catkdd: {warmup_epochs: 0}}", r"methods\.catkdd: not a distillation loss; choose from \[.*'catkd'"),
    ("{ce: {warmup_epochs: 0}}", r"methods\.ce: not a distillation loss"),
    # the entry named, not --distill_loss_kwargs or --distill_loss, which the command did not pass
    ("{catkd: {distill_loss_kwargs: {beta: 8}}}",
     r"methods\.catkd\.distill_loss_kwargs beta=8: catkd does not take 'beta'; it accepts catkd_loss_weight"),
    ("{dkd: {distill_loss_kwargs: {beta: x}}}",
     r"methods\.dkd\.distill_loss_kwargs beta='x': dkd's beta takes a float"),
    ("{ltkd: {distill_loss_kwargs: {alpha: -1}}}",
     r"methods\.ltkd\.distill_loss_kwargs alpha=-1: alpha must be a finite number >= 0"),
    ("{dkd: {learning_rate: 0.1}}", r"methods\.dkd\.learning_rate: a method sets only \['distill_loss_kwargs', "
                                    r"'warmup_epochs'\]; set learning_rate at the top level"),
    ("{dkd: {warmup_epochs: -1}}", r"methods\.dkd\.warmup_epochs -1: pass a number of epochs >= 0"),
    ("{dkd: 8}", r"methods\.dkd must map settings to values"),
    ("[dkd]", r"methods must map a loss to its settings"),
])
def test_a_bad_methods_entry_is_refused_when_the_config_is_read(tmp_path, methods, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"defaults: none\nmethods: {methods}\n")
    layered = tmp_path / "layered.yaml"
    layered.write_text("defaults: bad.yaml\n")
    for path in (bad, layered):  # the message names the file that holds the entry
        with pytest.raises(ValueError, match=rf"^--config {re.escape(str(bad))}: {message}"):
            parse_args("ltkd-distill", distill.ARGUMENTS, ["--config", str(path)])


def test_a_methods_warm_up_as_long_as_the_run_is_refused_naming_the_entry(tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text("defaults: demo\nmethods: {kd: {warmup_epochs: 40}}\n")
    common = ["--config", str(config), *DEMO_DATA, "--output_dir", str(tmp_path / "out")]
    entry = rf"--config {re.escape(str(config))}: methods\.kd\.warmup_epochs 40 is not shorter than the run \(30 epochs"
    with pytest.raises(ValueError, match=rf"^seed 0, cell 'KD': stage kd: {entry}"):
        table.plan([*common, "--losses", "kd"])
    with pytest.raises(ValueError, match=rf"^stage student_kd: {entry}"):
        distill.plan([*common, "--compare_kd_student", "true"])
    # the flag given on the command line is named as the flag
    with pytest.raises(ValueError, match=r"^stage student: --warmup_epochs 40 is not shorter than the run"):
        distill.plan([*common, "--warmup_epochs", "40", "--distill_loss", "kd"])
    # a config building on that one: the entry is named in the file that holds it (the message named the --config
    # given, which holds no methods: key)
    layered = tmp_path / "layered.yaml"
    layered.write_text("defaults: long.yaml\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=rf"^stage student_kd: {entry}"):
        distill.plan(["--config", str(layered), *common[2:], "--compare_kd_student", "true"])


def test_methods_is_config_only(capsys):
    with pytest.raises(ValueError, match=r"^--methods: not a flag of ltkd-table: it is config-only"):
        parse_args("ltkd-table", table.ARGUMENTS, ["--methods", "catkd"])
    with pytest.raises(SystemExit):
        parse_args("ltkd-distill", distill.ARGUMENTS, ["--help"])
    assert "methods: key (config-only" in " ".join(capsys.readouterr().out.split())
