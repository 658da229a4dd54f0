"""Command lines and YAML configs into the recipes' dataclasses, and user mistakes into one line.

``--config FILE.yaml`` holds flat keys of the dataclasses; the command line overrides it. A config builds on the
file its ``defaults:`` key names (a path relative to it, or a packaged config: ``base``, ``demo``), ``defaults:
none`` on nothing (the dataclasses' own defaults), and a config without the key on ``base`` (the recipe for your
own data, ``ltkd_hf/cli/configs/base.yaml``). A command without ``--config`` starts from ``demo`` for the built-in
demo data and from ``base`` otherwise.

A config's ``methods:`` key (config-only, no flag) holds each loss's own settings and warm-up, for the runs of that
loss: ``methods: {catkd: {distill_loss_kwargs: {catkd_loss_weight: 80.0}, warmup_epochs: 0}}``. ``ltkd-table`` gives
each cell of loss X ``methods.X``, ``ltkd-distill --distill_loss X`` too; they replace the config's top-level
``distill_loss_kwargs`` (key by key) and ``warmup_epochs``, and ``--distill_loss_kwargs`` (key by key) and
``--warmup_epochs`` given on the command line replace them. Through ``defaults:`` a file's ``methods.X`` overrides
the one under it key by key, so a recipe holds a method's shared settings and a pair's file only its own.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from tqdm import tqdm
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from ..config import DistillationConfig, check_loss_values, parse_loss_kwargs
from ..losses import available_losses
from ..training_fields import UNSUPPORTED_FIELDS
from .settings import METRIC_SCHEDULES, RECIPE_REFUSED, applies, refused_flags

__all__ = ["CONFIGS", "METHOD_SETTINGS", "Parsed", "load_config", "method_errors", "method_settings", "parse_args",
           "program_flags", "run_program"]

CONFIGS = Path(__file__).resolve().parent / "configs"
# What a config's methods.<loss> entry may set: the settings that differ from one method to another.
METHOD_SETTINGS = ("distill_loss_kwargs", "warmup_epochs")


def _find_config(name: str, holder: Path | None) -> Path:
    """The file of config ``name``: a path (from the folder of ``holder``, the config whose ``defaults:`` names it,
    first), or a packaged config's name."""
    candidates = [Path(name).expanduser()]
    if holder is not None:
        candidates.insert(0, holder.parent / name)
    candidates += [CONFIGS / name, CONFIGS / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    packaged = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    if holder is not None:
        raise FileNotFoundError(
            f"--config {holder}: its defaults: {name} is no such file (looked next to it and among the packaged "
            f"configs {packaged}); fix that line, or write defaults: none for a config complete in itself."
        )
    raise FileNotFoundError(
        f"--config {name}: no such file; pass a YAML file such as recipes/configs/"
        f"cifar100_lt_r100_resnet32x4_resnet8x4.yaml, or a packaged config: {packaged}."
    )


def load_config(name: str) -> dict[str, Any]:
    """The settings of the config ``name`` (a path or a packaged name), with every layer of ``defaults:`` under it."""
    merged: dict[str, Any] = {}
    for _, values in reversed(_config_layers(name)):
        methods = values.get("methods")
        if "methods" in merged and "methods" in values:
            methods = _merge(merged["methods"], values["methods"])
        merged = {**merged, **values}
        if methods is not None:
            merged["methods"] = methods
    return merged


def _config_layers(name: str, *, _holder: Path | None = None, _seen: tuple[Path, ...] = ()
                  ) -> list[tuple[Path, dict[str, Any]]]:
    """Each file of the config ``name``'s ``defaults:`` chain and its own settings, the config's own first."""
    path = _find_config(name, _holder).resolve()
    if path in _seen:
        raise ValueError(f"--config {name}: its defaults: chain comes back to {path}.")
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or err
        raise ValueError(f"--config {path}: not valid YAML at{where}: {problem}; fix the file.") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: must hold a mapping of setting names to values.")
    if "methods" in values:
        _check_methods(values["methods"], path)
    base = values.pop("defaults", "base" if path != CONFIGS / "base.yaml" else None)
    if base is None or str(base).lower() == "none":
        return [(path, values)]
    return [(path, values), *_config_layers(str(base), _holder=path, _seen=(*_seen, path))]


def _merge(under: dict, over: dict) -> dict:
    """``over`` on ``under``, mappings merged key by key at every depth."""
    merged = dict(under)
    for key, value in over.items():
        both = isinstance(merged.get(key), dict) and isinstance(value, dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _check_methods(methods: Any, path: Path) -> None:
    """Refuse a ``methods:`` entry naming no distillation loss, or a setting its loss does not take."""
    example = "methods: {catkd: {distill_loss_kwargs: {catkd_loss_weight: 80.0}, warmup_epochs: 0}}"
    if not isinstance(methods, dict):
        raise ValueError(f"--config {path}: methods must map a loss to its settings, e.g. {example}; got {methods!r}.")
    losses = [name for name in available_losses() if name != "ce"]  # ce: cross-entropy alone, nothing to set
    for loss, entry in methods.items():
        if loss not in losses:
            raise ValueError(f"--config {path}: methods.{loss}: not a distillation loss; choose from {losses}.")
        if not isinstance(entry, dict):
            raise ValueError(f"--config {path}: methods.{loss} must map settings to values, e.g. {example}; "
                             f"got {entry!r}.")
        for name in entry:
            if name not in METHOD_SETTINGS:
                raise ValueError(
                    f"--config {path}: methods.{loss}.{name}: a method sets only {list(METHOD_SETTINGS)}; set "
                    f"{name} at the top level of the config (it applies to every method)."
                )
        where = f"--config {path}: methods.{loss}.distill_loss_kwargs"
        check_loss_values(loss, parse_loss_kwargs(loss, entry.get("distill_loss_kwargs"), flag=where), flag=where)
        warmup = entry.get("warmup_epochs", 0)
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not warmup >= 0:
            raise ValueError(
                f"--config {path}: methods.{loss}.warmup_epochs {warmup!r}: pass a number of epochs >= 0 (0: none)."
            )


def default_config(argv: list[str]) -> str:
    """The config a command without --config starts from: the demo's for the built-in demo data, else ``base``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", default=None)
    dataset = pre.parse_known_args(argv)[0].dataset
    return "demo" if dataset in (None, "builtin:digits") else "base"


class _ProgramParser(HfArgumentParser):
    """`HfArgumentParser` that offers a program only the flags of the settings reaching its stages, less the ones it
    refuses whatever their value (`refused_flags`: parse_args names them with why)."""

    def __init__(self, program: str, dataclass_types: tuple, **kwargs: Any) -> None:
        self.program = program
        super().__init__(dataclass_types, **kwargs)

    def _add_dataclass_arguments(self, dtype) -> None:
        refused = refused_flags(self.program)
        kept = [f for f in fields(dtype) if not f.init or (applies(f.name, self.program) and f.name not in refused)]
        dropped = [f for f in fields(dtype) if f not in kept]
        # The program does not offer these; parse_args_into_dataclasses still reads their defaults.
        self.set_defaults(**{f.name: _default(f) for f in dropped})
        # HfArgumentParser adds every field of a dataclass: show it only the kept ones, for this call.
        original = dtype.__dataclass_fields__
        try:
            dtype.__dataclass_fields__ = {f.name: f for f in kept}
            super()._add_dataclass_arguments(dtype)
        finally:
            dtype.__dataclass_fields__ = original
        for action in self._actions:  # parsed, so that a value is refused with the reason, but not offered
            if action.dest in UNSUPPORTED_FIELDS:
                action.help = argparse.SUPPRESS

    def error(self, message: str):
        """A flag's bad value (``--seeds 0 1.5``) in one line, as every other mistake: argparse would print the
        whole usage (over a hundred lines) above it."""
        self.exit(2, f"{self.prog}: error: {message}; see --help.\n")


def _default(f) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _unset_with_none(argv: list[str], optional: set[str]) -> tuple[list[str], dict]:
    """``--name none`` for a setting that may be None: drop it from argv and return it as ``{name: None}``."""
    rest, unset, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        name, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        name = name.replace("-", "_")
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
    # as given, "--name none" included; argparse's --dashed-alias of a flag is the flag
    flags = [a[2:].partition("=")[0].replace("-", "_") for a in argv if a.startswith("--")]
    argv, unset = _unset_with_none(argv, optional)
    which = None if default is None else (
        f"The defaults shown are the {config_name!r} config's (the built-in demo's without --dataset; a command with "
        "--dataset, or a --config without a defaults: key, starts from the 'base' config); add --dataset or --config "
        "to --help to see theirs."
    )
    parser = _ProgramParser(program, dataclass_types, prog=_prog(program), allow_abbrev=False,  # no silent prefixes
                            description=which)
    parser.add_argument("--config", default=None, help="YAML file of settings (or a packaged config: base, demo); "
                        "command-line flags override it. Its methods: key (config-only, no flag) sets each loss's "
                        "settings and warm-up, e.g. methods: {catkd: {distill_loss_kwargs: {catkd_loss_weight: 80.0}, "
                        "warmup_epochs: 0}}, for the runs of that loss (--distill_loss_kwargs and --warmup_epochs "
                        "override it). See the module docstring of ltkd_hf.cli.parsing.")
    offered = {a.dest for a in parser._actions}
    # each flag by the setting it sets (--no_verify_images sets verify_images)
    dests = {option[2:].replace("-", "_"): a.dest for a in parser._actions for option in a.option_strings}
    flags = [dests.get(name, name) for name in flags]
    # A flag of several values given twice reads as "add these" (--sweep alpha=1,2 --sweep beta=1), but argparse
    # keeps the last one; a one-value flag given again is the usual override of a command's earlier value.
    lists = {a.dest for a in parser._actions if a.nargs in ("+", "*")}
    twice = sorted({name for name in flags if name in lists and flags.count(name) > 1})
    if twice:
        raise ValueError(f"--{twice[0]}: given twice, and only the last would count; give all its values after one "
                         f"--{twice[0]} (e.g. --sweep alpha=1,6 beta=1,6).")
    values = load_config(config_name) if config_name else {}
    known_names = {f.name for f in all_fields} | _every_program_setting()
    unknown = sorted(set(values) - known_names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known_names), n=1)
        hint = f"did you mean {close[0]} (for {unknown[0]})?" if close else "see --help for the accepted ones."
        raise ValueError(f"--config {config_name}: unknown settings {unknown}; {hint}")
    refused_keys = sorted(set(values) & set(RECIPE_REFUSED))
    if refused_keys:
        raise ValueError(f"--config {config_name}: {refused_keys[0]}: not a setting of the recipes: "
                         f"{RECIPE_REFUSED[refused_keys[0]]}.")
    parser.set_defaults(**_typed_config(parser, {k: v for k, v in values.items() if k in offered}, optional,
                                        config_name))
    parser.set_defaults(**{k: v for k, v in unset.items() if k in offered})
    given = set(flags)
    refused = refused_flags(program)
    named = sorted(given & set(refused))
    if named:
        raise ValueError(f"--{named[0]}: not a flag of {program}: {refused[named[0]]}.")
    parsed = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True, look_for_args_file=False)
    remaining = parsed[-1]
    if remaining:
        raise ValueError(_not_offered(remaining[0], program, offered, known_names))
    config = next((v for v in parsed if isinstance(v, DistillationConfig)), None)
    if config is not None and config.lr_scheduler_type.value in METRIC_SCHEDULES:
        raise ValueError(f"--lr_scheduler_type {config.lr_scheduler_type.value}: it moves the learning rate by "
                         "evaluation's metric, and the recipes evaluate on the test split, so the weights would be "
                         "tuned on the images the report scores; choose a fixed schedule (e.g. cosine, or the step "
                         "decay of --lr_decay_epochs).")
    for name, init in (("student", "student_init"), ("teacher_architecture", "teacher_init")):
        checkpoint = next((getattr(p, init) for p in parsed[:-1] if getattr(p, init, None)), None)
        if name in given and checkpoint:
            raise ValueError(f"--{name}: --{init} {checkpoint} replaces it (the checkpoint decides the architecture), "
                             "so it would change nothing; drop one of them.")
    epochs = sorted(given & {"num_train_epochs", "teacher_epochs"})
    if config is not None and config.max_steps > 0 and epochs:
        raise ValueError(f"--{epochs[0]}: --max_steps {config.max_steps} sets the length of every stage (Trainer's "
                         "max_steps overrides the epochs), so it would change nothing; drop one of them.")
    if config is not None:
        _refuse_unread_given(config, given)
    return Parsed(tuple(parsed[: len(dataclass_types)]), values, given - {"config"}, config_name)


def _refuse_unread_given(config: DistillationConfig, given: set[str]) -> None:
    """A flag given on the command line that the strategy in force never reads (`DistillationConfig` refuses the
    others; these two the configs set, so only the command line's are refused)."""
    logging, saving = (getattr(s, "value", s) for s in (config.logging_strategy, config.save_strategy))
    if "logging_steps" in given and logging != "steps":
        raise ValueError(f"--logging_steps {config.logging_steps:g} is the interval of --logging_strategy steps, and "
                         f"--logging_strategy is '{logging}', so it would change nothing; pass --logging_strategy "
                         "steps, or drop it.")
    if "save_total_limit" in given and saving == "no":
        raise ValueError(f"--save_total_limit {config.save_total_limit} limits the checkpoints --save_strategy saves, "
                         "and --save_strategy is 'no' (none), so it would change nothing; pass --save_strategy epoch "
                         "or steps, or drop it.")


_KINDS = {int: "an integer", float: "a number", string_to_bool: "true or false"}


def _typed_config(parser: argparse.ArgumentParser, values: dict[str, Any], optional: set[str], config_name: str
                  ) -> dict[str, Any]:
    """A config's values as the command line's flags would give them: argparse converts and checks the values it
    parses, but takes defaults as they are, so a YAML value of the wrong type (``seed: 1.5``, ``imbalance_factor:
    [20]``, ``student: null``) would reach the run unchecked. A list flag takes one value as a list of it."""
    actions = {a.dest: a for a in parser._actions if a.nargs != 0}

    def refuse(key: str, value: Any, what: str) -> ValueError:
        return ValueError(f"--config {config_name}: {key}: {value!r} is not {what}, as --{key} takes; fix the file.")

    def one(key: str, action: argparse.Action, value: Any) -> Any:
        kind = _KINDS.get(action.type) or (f"one of {list(action.choices)}" if action.choices else None)
        if kind is None:  # text, or a mapping the dataclass parses itself
            return value
        if isinstance(value, (list, dict)) or (action.type in (int, float) and isinstance(value, bool)):
            raise refuse(key, value, kind)
        try:
            converted = action.type(str(value).lower() if isinstance(value, bool) else str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise refuse(key, value, kind) from None
        if action.choices and converted not in action.choices:
            raise refuse(key, value, kind)
        return converted

    typed = {}
    for key, value in values.items():
        action = actions[key]
        if isinstance(value, str) and value.lower() == "none" and key in optional:
            value = None  # as --name none unsets it on the command line
        if value is None:
            if key not in optional:
                raise refuse(key, value, "a value (this setting cannot be unset)")
            typed[key] = None
        elif action.nargs in ("+", "*"):
            typed[key] = [one(key, action, item) for item in (value if isinstance(value, list) else [value])]
        else:
            typed[key] = one(key, action, value)
    return typed


def method_settings(parsed: Parsed, config: DistillationConfig, loss: str) -> dict[str, Any]:
    """The ``distill_loss_kwargs`` and ``warmup_epochs`` of a run of ``loss``: the config's ``methods[loss]`` over
    its top-level values (whose loss settings belong to its --distill_loss only), and the command line's
    ``--distill_loss_kwargs`` (key by key, for its --distill_loss) and ``--warmup_epochs`` over both. ``ce``
    (cross-entropy alone) has neither: no loss settings, and no distillation term to ramp up."""
    if loss == "ce":
        return {"distill_loss_kwargs": {}, "warmup_epochs": 0.0}
    method = parsed.config.get("methods", {}).get(loss, {})
    own = config.distill_loss_kwargs if loss == config.distill_loss else {}
    layers = [parse_loss_kwargs(loss, method.get("distill_loss_kwargs")), own]
    if "distill_loss_kwargs" not in parsed.given:  # the config's own top-level settings: under methods[loss]
        layers.reverse()
    warmup = config.warmup_epochs
    if "warmup_epochs" not in parsed.given:
        warmup = method.get("warmup_epochs", warmup)
    return {"distill_loss_kwargs": {**layers[0], **layers[1]}, "warmup_epochs": warmup}


@contextmanager
def method_errors(parsed: Parsed, loss: str) -> Iterator[None]:
    """Building a run of ``loss``: an error naming --warmup_epochs names the config's ``methods.<loss>.warmup_epochs``
    instead, in the file of its ``defaults:`` chain that holds it, where the run's warm-up came from there (the
    command did not pass the flag)."""
    try:
        yield
    except ValueError as err:
        method = parsed.config.get("methods", {}).get(loss, {})
        if "warmup_epochs" in parsed.given or "warmup_epochs" not in method:
            raise
        holder = next(path for path, values in _config_layers(parsed.config_name)
                      if "warmup_epochs" in values.get("methods", {}).get(loss, {}))
        where = f"--config {holder}: methods.{loss}.warmup_epochs"
        raise type(err)(str(err).replace("--warmup_epochs", where)) from None


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
        from .settings import PROGRAM_SETTINGS, SETTINGS

        if name in SETTINGS:
            stages = ", ".join(sorted(SETTINGS[name].reaches))
            return (f"--{name}: not a setting of {program}, whose stages it does not reach (it applies to: {stages}); "
                    "drop it, or run the program that trains that stage (see --help).")
        owners = " and ".join(sorted(other for other, own in PROGRAM_SETTINGS.items() if name in own))
        return f"--{name}: not a flag of {program}; it is a flag of {owners} (see its --help); drop it here."
    close = difflib.get_close_matches(name, sorted(offered), n=1)
    hint = f"; did you mean --{close[0]}?" if close else "; see --help for the accepted flags."
    return f"--{name}: unknown flag{hint}"


def _prog(program: str) -> str:
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script.endswith(".py") else program


def _close_progress_bars() -> None:
    """Close the progress bars an error or Ctrl-C cut short (each ends its line), so that the message that follows
    starts a line of its own."""
    for bar in list(tqdm._instances):
        bar.close()


def run_program(program: str, main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run ``main`` as a command: a user mistake prints ``program: error: <message>`` on one line and exits 2, as
    argparse does, and Ctrl-C says how to resume and exits 130; ``LTKD_DEBUG=1`` shows the traceback instead. A
    multi-process run closes its processes."""
    from .stages import close_processes

    debug = os.environ.get("LTKD_DEBUG", "0") not in ("", "0")
    try:
        main(argv)
    except (ValueError, FileNotFoundError, ConnectionError, PermissionError) as err:
        if debug:
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        _close_progress_bars()
        print(f"{_prog(program)}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # PIL, reading a damaged image mid-run ("cannot identify image file '...'")
        if debug or "image file" not in str(err):
            raise
        _close_progress_bars()
        print(f"{_prog(program)}: error: {err}: an image could not be read while training; replace or delete the "
              "file (--verify_images true, the default, finds every such file before anything trains).",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            raise
        _close_progress_bars()
        print(f"{_prog(program)}: interrupted. Finished stages and saved checkpoints are kept: the same command "
              "reuses them and resumes the interrupted stage from its last checkpoint.", file=sys.stderr)
        sys.exit(130)
    close_processes()
