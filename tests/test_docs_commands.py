"""Every command the README and the docs show parses: its program exists, its flags are the program's (no typo, no
flag of another program), its values and its config resolve. Commands whose data needs the Hub are checked up to
loading it; the README's demo and own-folder commands are run for real (tests/test_demo.py, under `pytest -m slow`,
tests/test_readme_own_folder.py)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from ltkd_hf.cli import distill, evaluate, table, teacher
from ltkd_hf.cli.parsing import default_config, parse_args

from scripts import run_script

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = {"run_distill.py": distill, "ltkd-distill": distill, "run_teacher.py": teacher, "ltkd-teacher": teacher,
            "run_eval.py": evaluate, "ltkd-eval": evaluate, "run_table.py": table, "ltkd-table": table}
PLACEHOLDER_CONFIG = "recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml"  # what "--config ..." stands for


def shell_blocks(text: str) -> list[str]:
    """The contents of the fenced blocks of a Markdown page that are shell (```bash, ```sh or no language)."""
    blocks, current, language = [], None, None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current, language = [], line.strip()[3:].strip()
            else:
                if language in ("", "bash", "sh", "shell"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for each shell line in a fenced block of README.md and docs/*.md that runs a recipe or a
    benchmark; continuation lines joined, comments dropped."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in shell_blocks(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line)  # a comment, not a '#' inside a word
                if re.search(r"(recipes/run_\w+\.py|ltkd-(distill|teacher|eval|table)\b|benchmarks/\w+\.py)", line):
                    found.append((page.name, " ".join(line.split())))
    return found


def program_and_arguments(command: str):
    words = shlex.split(command.split("&&")[-1])
    at = next(i for i, w in enumerate(words) if Path(w).name in PROGRAMS or w.startswith("benchmarks/"))
    script, argv = words[at], words[at + 1:]
    argv = [PLACEHOLDER_CONFIG if w == "..." and i and argv[i - 1] == "--config" else w for i, w in enumerate(argv)]
    argv = [w for w in argv if w not in ("...",) and not (w.startswith("[") and w.endswith("]"))]
    return script, argv


COMMANDS = documented_commands()


def test_the_docs_show_every_program():
    scripts = {Path(program_and_arguments(c)[0]).name for _, c in COMMANDS}
    assert {"run_distill.py", "run_table.py"} <= scripts and len(COMMANDS) >= 20


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_a_documented_command_parses(where, command, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the commands are written from the repository's root
    if command.startswith("torchrun"):  # its flags set up a process group: run for real by the torchrun test
        pytest.skip("run by tests/test_recipes.py::test_two_processes_shard_train_and_gather_every_test_image")
    script, argv = program_and_arguments(command)
    if script.startswith("benchmarks/"):
        monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as `python benchmarks/x.py` has it: its neighbours
        spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "build_parser"):
            module.build_parser().parse_args(argv)
        else:  # a benchmark without flags: it must say so in --help
            code, _, err = run_script(REPO / script, ["--help"], monkeypatch, capsys)
            assert code == 0, err[-2000:]
        return
    program = PROGRAMS[Path(script).name]
    if program is evaluate and "--model" not in argv:
        argv += ["--model", "outputs/ltkd-demo/student"]
    parse_args(program.PROGRAM, program.ARGUMENTS, argv, default=default_config)
