"""The config layer: every shipped config resolves to exactly the settings it had before the defaults layer, the
paper configs hold only their own values, and a custom config builds on base.yaml."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ltkd_hf.cli import distill
from ltkd_hf.cli.parsing import CONFIGS, load_config, parse_args

REPO = Path(__file__).resolve().parents[1]
# Written by the parser that had no defaults layer (recipes/recipe_args.py at a3874d3), before the configs were
# rewritten as deltas: the resolved value of every setting of every config then.
BEFORE = json.loads((REPO / "tests" / "data" / "resolved_configs.json").read_text())
# What was changed on purpose since: the demo reads the digits at 16 px and clips gradients (its config says why).
BEFORE["demo.yaml"].update(input_size=16, max_grad_norm=5.0)


def config_path(name: str) -> Path:
    return CONFIGS / name if (CONFIGS / name).is_file() else REPO / "recipes" / "configs" / name


def resolved(argv: list[str]) -> dict:
    values = {}
    for obj in parse_args("ltkd-distill", distill.ARGUMENTS, argv).values:
        as_dict = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        values.update({f.name: as_dict.get(f.name) for f in dataclasses.fields(obj) if f.init})
    return json.loads(json.dumps(values, default=str))


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_every_config_resolves_to_the_settings_it_had(name):
    now = resolved(["--config", str(config_path(name))])
    changed = {k: (v, now.get(k)) for k, v in BEFORE[name].items() if now.get(k) != v}
    assert not changed


def test_paper_configs_hold_only_their_own_values():
    papers = sorted((REPO / "recipes" / "configs").glob("*_lt_r*.yaml"))
    assert len(papers) == 30
    lengths = [len(p.read_text().splitlines()) for p in papers]
    assert sum(lengths) / len(lengths) <= 20, lengths
    for path in papers:  # every paper config builds on a shared recipe file
        assert load_config(str(path)) != {k: v for k, v in __import__("yaml").safe_load(path.read_text()).items()
                                          if k != "defaults"}


def test_a_custom_config_builds_on_base_and_defaults_none_on_the_library(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("dataset: /data/birds\nnum_train_epochs: 10\n")
    base = load_config("base")
    assert load_config(str(mine)) == {**base, "dataset": "/data/birds", "num_train_epochs": 10}
    settings = resolved(["--config", str(mine)])
    assert settings["lr_scheduler_type"] == "cosine" and settings["student"] == base["student"]
    assert settings["learning_rate"] == base["learning_rate"] and settings["num_train_epochs"] == 10

    alone = tmp_path / "alone.yaml"
    alone.write_text("defaults: none\ndataset: /data/birds\n")
    assert load_config(str(alone)) == {"dataset": "/data/birds"}
    assert resolved(["--config", str(alone)])["learning_rate"] == 5e-05  # TrainingArguments' own default

    layered = tmp_path / "layered.yaml"
    layered.write_text("defaults: mine.yaml\nnum_train_epochs: 5\n")  # relative to the including file
    assert load_config(str(layered))["dataset"] == "/data/birds" and load_config(str(layered))["num_train_epochs"] == 5
    # a missing defaults: file named the missing name as if it were the --config given
    missing = tmp_path / "missing.yaml"
    missing.write_text("defaults: nope.yaml\n")
    with pytest.raises(FileNotFoundError, match=rf"^--config {missing}: its defaults: nope.yaml is no such file "
                                                r"\(looked next to it and among the packaged configs \['base', "
                                                r"'demo'\]\); fix that line, or write defaults: none"):
        load_config(str(missing))
    loop = tmp_path / "loop.yaml"
    loop.write_text("defaults: loop.yaml\n")
    with pytest.raises(ValueError, match="comes back to"):
        load_config(str(loop))


def test_packaged_configs_by_name_and_a_missing_one_named():
    assert resolved(["--config", "demo"])["dataset"] == "builtin:digits"
    with pytest.raises(FileNotFoundError, match=r"--config nope.yaml: no such file.*packaged config: \['base', 'demo'\]"):
        load_config("nope.yaml")


def test_a_config_that_is_not_yaml_is_named_with_its_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("dataset: builtin:digits\nteacher_epochs: [1\n")
    with pytest.raises(ValueError, match=rf"--config {path}: not valid YAML at line 3, column 1: expected ',' or ']'"):
        load_config(str(path))
