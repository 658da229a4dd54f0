"""Write a set of files into a folder so that an interrupted write leaves the previous files in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

__all__ = ["atomic_write_files"]

_STAGING_PREFIX = ".ltkd-tmp-"


def atomic_write_files(output_dir: str | os.PathLike, writers: Mapping[str, Callable[[Path], None]]) -> Path:
    """Create ``output_dir`` if needed and write each ``name -> writer(path)`` file into it atomically.

    Every writer runs first into a staging folder inside ``output_dir`` (same filesystem, so the final
    ``os.replace`` is a rename); only when all of them succeeded are the files moved into place. A failure
    (or a kill) before that point leaves the folder's previous files untouched; the staging folder a kill leaves
    behind is removed by the next write. Other files already in ``output_dir`` (checkpoints, reports) are kept.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir={str(out)!r} exists and is not a folder; pass a folder path.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f"{_STAGING_PREFIX}*"):  # the staging folder of a write a kill interrupted
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    except OSError as err:
        raise ValueError(
            f"output_dir={str(out)!r} cannot be written ({err.strerror}); pass a folder you can write to."
        ) from err
    try:
        for name, write in writers.items():
            write(staging / name)
        for name in writers:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
