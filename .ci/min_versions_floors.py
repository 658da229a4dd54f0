"""Print pip constraints that pin every install_requires of setup.cfg to its declared floor (``pkg>=X`` -> ``pkg==X``).

The pins are read from setup.cfg each time, so the minimum-versions check cannot drift from the metadata. A
requirement without a ``>=`` floor is an error: every dependency must declare the oldest version it was checked
with. ``--exclude NAME`` leaves a requirement out (its floor is then only declared, not installed).

Usage: python .ci/min_versions_floors.py [--exclude torch --exclude torchvision] > floors.txt
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)(?:;.*)?$")


def _canonical(name: str) -> str:
    """The normalised project name (PEP 503), so "PyYAML" and "pyyaml" compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def floors(setup_cfg: Path) -> dict[str, str]:
    """``{name: floor}`` for each install_requires line of ``setup_cfg``; raises ValueError for one without ``>=``."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg, encoding="utf-8")
    lines = [line.strip() for line in parser.get("options", "install_requires").splitlines()]
    result = {}
    for line in filter(None, lines):
        match = _REQUIREMENT.match(line)
        floor = re.search(r">=\s*([^\s,]+)", match.group("spec")) if match else None
        if floor is None:
            raise ValueError(
                f"{setup_cfg}: install_requires line {line!r} has no '>=' floor; declare the oldest version the "
                "package works with (e.g. 'name>=1.2'), which .ci/min_versions.sh then installs and tests."
            )
        result[match.group("name")] = floor.group(1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup-cfg", type=Path, default=Path(__file__).resolve().parent.parent / "setup.cfg")
    parser.add_argument("--exclude", action="append", default=[], help="a requirement not to pin (repeatable)")
    args = parser.parse_args()
    try:
        found = floors(args.setup_cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    excluded = {_canonical(name) for name in args.exclude}
    unknown = excluded - {_canonical(name) for name in found}
    if unknown:
        print(f"error: --exclude {sorted(unknown)} names no install_requires line of {args.setup_cfg}.", file=sys.stderr)
        return 2
    for name, floor in found.items():
        if _canonical(name) in excluded:
            print(f"not pinned: {name}>={floor}", file=sys.stderr)
        else:
            print(f"{name}=={floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
