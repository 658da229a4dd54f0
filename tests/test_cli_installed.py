"""`pip install` alone is enough: from a copy of the project without recipes/, the built package installs the four
console commands, whose --help works and whose demo run writes the student folder (the packaged configs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # scheduled first (conftest.py)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("installed")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    source = root / "source"
    for name in tracked:
        if name.startswith(("recipes/", "tests/", "benchmarks/")) or not (REPO / name).is_file():
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((root / "wheel").glob("ltkd_hf-*.whl"))
    site = root / "site"  # --target: the wheel alone, beside (not instead of) the environment's packages
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "2"}
    return site, env, root


# One process for the four --help (each command's process spends most of its time importing torch): the installed
# distribution's own console_scripts entry points, each called as its script would call it.
HELP_ALL = """
import contextlib, io, json, sys
from importlib.metadata import distribution
dist = distribution("ltkd_hf")
helps = {}
for entry in dist.entry_points.select(group="console_scripts"):
    sys.argv = [entry.name, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            entry.load()()
        except SystemExit as exit:
            code = exit.code
    helps[entry.name] = {"code": code, "out": out.getvalue()}
import ltkd_hf
print(json.dumps({"package": ltkd_hf.__file__, "dist": str(dist.locate_file("")), "helps": helps}))
"""


def test_the_console_commands_are_installed_and_their_help_works(installed):
    site, env, root = installed
    proc = subprocess.run([sys.executable, "-c", HELP_ALL], env=env, cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["package"].startswith(str(site)) and found["dist"] == str(site)  # the installed copy, not the checkout
    commands = ["ltkd-distill", "ltkd-eval", "ltkd-table", "ltkd-teacher"]
    assert sorted(found["helps"]) == commands
    for command in commands:
        assert (site / "bin" / command).is_file()  # the script the demo test below runs
        help_ = found["helps"][command]
        assert help_["code"] == 0, command
        assert "--output_dir" in help_["out"] and help_["out"].startswith(f"usage: {command}")
    assert (site / "ltkd_hf" / "cli" / "configs" / "demo.yaml").is_file()


def test_the_installed_demo_writes_the_student_folder(installed):
    site, env, root = installed
    work = root / "work"  # no recipes/ and no configs next to it: the demo config comes from the package
    work.mkdir()
    proc = subprocess.run([str(site / "bin" / "ltkd-distill"), "--max_steps", "2", "--lr_decay_epochs", "none",
                           "--warmup_epochs", "0", "--per_device_train_batch_size", "16", "--verify_images", "false",
                           "--compare_ce_student", "false", "--compare_kd_student", "false"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = work / "outputs" / "ltkd-demo" / "student"
    assert (student / "model.safetensors").is_file() and (student / "README.md").is_file()
    assert "builtin:digits" in (student / "config.json").read_text()
