"""Run a script as `python path/to/script.py ARGS` would, in the test's own process: a refusal or --help is over
in milliseconds, where a new process spends seconds importing torch."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def run_script(path: Path, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``path`` run as ``__main__`` with its folder first on ``sys.path`` and ``argv`` after its name, as Python runs
    a script; returns its exit code (0 when it returns) and what it wrote to stdout and stderr."""
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    capsys.readouterr()  # only what the script writes
    try:
        runpy.run_path(str(path), run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = 0 if exit.code is None else exit.code
    out, err = capsys.readouterr()
    return code, out, err
