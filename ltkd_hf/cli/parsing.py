"""Command lines and YAML configs into the recipes' dataclasses, and user mistakes into one line.

``--config FILE.yaml`` holds flat keys of the dataclasses; the command line overrides it. A config builds on the
file its ``defaults:`` key names (a path relative to it, or a packaged config: ``base``, ``demo``), ``defaults:
none`` on nothing (the dataclasses' own defaults), and a config without the key on ``base`` (the recipe for your
own data, ``ltkd_hf/cli/configs/base.yaml``). A command without ``--config`` starts from ``demo`` for the built-in
demo data and from ``base`` otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import yaml
from transformers import HfArgumentParser

from .settings import RECIPE_REFUSED, applies

__all__ = ["CONFIGS", "Parsed", "load_config", "parse_args", "program_flags", "run_program"]

CONFIGS = Path(__file__).resolve().parent / "configs"


def _find_config(name: str, relative_to: Path | None) -> Path:
    candidates = [Path(name).expanduser()]
    if relative_to is not None:
        candidates.insert(0, relative_to / name)
    candidates += [CONFIGS / name, CONFIGS / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    where = f" (next to {relative_to})" if relative_to is not None else ""
    packaged = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    raise FileNotFoundError(
        f"--config {name}: no such file{where}; pass a YAML file such as recipes/configs/"
        f"cifar100_lt_r100_resnet32x4_resnet8x4.yaml, or a packaged config: {packaged}."
    )


def load_config(name: str, *, _relative_to: Path | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of the config ``name`` (a path or a packaged name), with every layer of ``defaults:`` under it."""
    path = _find_config(name, _relative_to).resolve()
    if path in _seen:
        raise ValueError(f"--config {name}: its defaults: chain comes back to {path}.")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: must hold a mapping of setting names to values.")
    base = values.pop("defaults", "base" if path != CONFIGS / "base.yaml" else None)
    if base is None or str(base).lower() == "none":
        return values
    return {**load_config(str(base), _relative_to=path.parent, _seen=(*_seen, path)), **values}


def default_config(argv: list[str]) -> str:
    """The config a command without --config starts from: the demo's for the built-in demo data, else ``base``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", default=None)
    dataset = pre.parse_known_args(argv)[0].dataset
    return "demo" if dataset in (None, "builtin:digits") else "base"


class _ProgramParser(HfArgumentParser):
    """`HfArgumentParser` that offers a program only the flags of the settings reaching its stages."""

    def __init__(self, program: str, dataclass_types: tuple, **kwargs: Any) -> None:
        self.program = program
        super().__init__(dataclass_types, **kwargs)

    def _add_dataclass_arguments(self, dtype) -> None:
        kept = [f for f in fields(dtype) if not f.init or applies(f.name, self.program)]
        dropped = [f for f in fields(dtype) if f.init and not applies(f.name, self.program)]
        # The program does not offer these; parse_args_into_dataclasses still reads their defaults.
        self.set_defaults(**{f.name: _default(f) for f in dropped})
        # HfArgumentParser adds every field of a dataclass: show it only the kept ones, for this call.
        original = dtype.__dataclass_fields__
        try:
            dtype.__dataclass_fields__ = {f.name: f for f in kept}
            super()._add_dataclass_arguments(dtype)
        finally:
            dtype.__dataclass_fields__ = original


def _default(f) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _unset_with_none(argv: list[str], optional: set[str]) -> tuple[list[str], dict]:
    """``--name none`` for a setting that may be None: drop it from argv and return it as ``{name: None}``."""
    rest, unset, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        name, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in optional and not value and i + 1 < len(argv) and argv[i + 1].lower() == "none":
            unset[name], i = None, i + 2
            continue
        if name in optional and value.lower() == "none":
            unset[name], i = None, i + 1
            continue
        rest.append(arg)
        i += 1
    return rest, unset


@dataclass
class Parsed:
    """The parsed dataclasses (in the order asked for), the config's settings, and the flags the command line set."""

    values: tuple
    config: dict[str, Any]
    given: set[str]
    config_name: str | None


def parse_args(
    program: str, dataclass_types: tuple, argv: list[str] | None = None, *, default: str | Callable | None = None
) -> Parsed:
    """Parse ``--config`` and the command line for ``program`` into ``dataclass_types``. A flag of a setting that
    reaches none of the program's stages, or an unknown one, is refused by name; config keys of other programs'
    settings are skipped (one config serves every program of a setting)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    config_name = known.config or (default(argv) if callable(default) else default)
    # Settings that may be None and take no text ("--report_to none" is a value, not an unset). HfArgumentParser
    # rewrites field types in place (Optional[list[float]] becomes list[float]), so the default says it too.
    all_fields = [f for t in dataclass_types for f in fields(t) if f.init]
    optional = {f.name for f in all_fields if (f.default is None or "None" in str(f.type)) and "str" not in str(f.type)}
    argv, unset = _unset_with_none(argv, optional)
    parser = _ProgramParser(program, dataclass_types, prog=_prog(program), allow_abbrev=False)  # no silent prefixes
    parser.add_argument("--config", default=None, help="YAML file of settings (or a packaged config: base, demo); "
                        "command-line flags override it. See the module docstring of ltkd_hf.cli.parsing.")
    offered = {a.dest for a in parser._actions}
    values = load_config(config_name) if config_name else {}
    known_names = {f.name for f in all_fields} | _every_program_setting()
    unknown = sorted(set(values) - known_names)
    if unknown:
        raise ValueError(f"--config {config_name}: unknown settings {unknown}; see --help for the accepted ones.")
    parser.set_defaults(**{k: v for k, v in values.items() if k in offered})
    parser.set_defaults(**{k: v for k, v in unset.items() if k in offered})
    given = {a[2:].partition("=")[0] for a in argv if a.startswith("--")} | set(unset)
    refused = sorted(given & set(RECIPE_REFUSED))
    if refused:
        raise ValueError(f"--{refused[0]}: not a flag of the recipes: {RECIPE_REFUSED[refused[0]]}.")
    parsed = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True, look_for_args_file=False)
    remaining = parsed[-1]
    if remaining:
        raise ValueError(_not_offered(remaining[0], program, offered, known_names))
    return Parsed(tuple(parsed[: len(dataclass_types)]), values, given - {"config"}, config_name)


def _every_program_setting() -> set[str]:
    from .settings import PROGRAM_SETTINGS, SETTINGS

    return set(SETTINGS) | {name for own in PROGRAM_SETTINGS.values() for name in own}


def program_flags(program: str, dataclass_types: tuple) -> set[str]:
    """The settings ``program``'s command line offers (their names, without ``--``)."""
    parser = _ProgramParser(program, dataclass_types)
    return {action.dest for action in parser._actions if action.dest != "help"}


def _not_offered(arg: str, program: str, offered: set[str], known: set[str]) -> str:
    name = arg[2:].partition("=")[0] if arg.startswith("--") else arg
    if not arg.startswith("--"):
        return f"{arg!r}: an argument without a flag; write --name value (see --help)."
    if name in known:
        from .settings import SETTINGS

        stages = ", ".join(sorted(SETTINGS[name].stages)) if name in SETTINGS else "other programs"
        return (f"--{name}: not a setting of {program}, whose stages it does not reach (it applies to: {stages}); "
                "drop it, or run the program that trains that stage (see --help).")
    close = difflib.get_close_matches(name, sorted(offered), n=1)
    hint = f"; did you mean --{close[0]}?" if close else "; see --help for the accepted flags."
    return f"--{name}: unknown flag{hint}"


def _prog(program: str) -> str:
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script.endswith(".py") else program


def run_program(program: str, main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run ``main`` as a command: a user mistake prints ``program: error: <message>`` on one line and exits 2, as
    argparse does; ``LTKD_DEBUG=1`` shows the traceback instead. A multi-process run closes its processes."""
    from .stages import close_processes

    try:
        main(argv)
    except (ValueError, FileNotFoundError, ConnectionError, PermissionError) as err:
        if os.environ.get("LTKD_DEBUG", "0") not in ("", "0"):
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"{_prog(program)}: error: {message}", file=sys.stderr)
        sys.exit(2)
    close_processes()
