"""`pip install` alone is enough: from a copy of the project without recipes/, the built package installs the four
console commands, whose --help works and whose demo run writes the student folder (the packaged configs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_console_commands_are_installed_and_their_help_works(installed):
    site, env, root = installed
    where = subprocess.run([sys.executable, "-c", "import ltkd_hf; print(ltkd_hf.__file__)"], env=env, cwd=root,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))  # the installed copy, not the checkout
    for command in ("ltkd-distill", "ltkd-teacher", "ltkd-eval", "ltkd-table"):
        proc = subprocess.run([str(site / "bin" / command), "--help"], env=env, cwd=root, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "--output_dir" in proc.stdout and proc.stdout.startswith(f"usage: {command}")
    assert (site / "ltkd_hf" / "cli" / "configs" / "demo.yaml").is_file()


def test_the_installed_demo_writes_the_student_folder(installed):
    site, env, root = installed
    work = root / "work"  # no recipes/ and no configs next to it: the demo config comes from the package
    work.mkdir()
    proc = subprocess.run([str(site / "bin" / "ltkd-distill"), "--max_steps", "2", "--lr_decay_epochs", "none",
                           "--warmup_epochs", "0", "--per_device_train_batch_size", "16", "--verify_images", "false",
                           "--compare_ce_student", "false"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = work / "outputs" / "ltkd-demo" / "student"
    assert (student / "model.safetensors").is_file() and (student / "README.md").is_file()
    assert "builtin:digits" in (student / "config.json").read_text()
