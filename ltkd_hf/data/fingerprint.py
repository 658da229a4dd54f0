"""What identifies a dataset's content: a fingerprint that changes when any of its files or rows changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from datasets import DatasetDict

__all__ = ["canonical_source", "dataset_fingerprint", "file_fingerprint", "folder_fingerprint"]


def canonical_source(source: str, kind: str) -> str:
    """One spelling per source: a local folder as its absolute path without a trailing slash (``dir``, ``dir/``
    and ``./dir`` are one dataset); a Hub id or a built-in name as given."""
    return str(Path(source).expanduser().resolve()) if kind == "local" else source


def folder_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of every file under ``path``: its relative path, size and modification time (nanoseconds), so an
    image replaced, edited in place, added, removed or renamed gives another fingerprint. Reads no file's bytes."""
    root = Path(path)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            file = Path(folder, name)
            stat = file.stat()
            digest.update(f"{file.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "files:" + digest.hexdigest()[:32]


def file_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of one file: its name, size and modification time, as `folder_fingerprint` takes them."""
    stat = Path(path).stat()
    text = f"{Path(path).name}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
    return "files:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def dataset_fingerprint(loaded: DatasetDict, source: str, kind: str) -> str:
    """The fingerprint of a loaded source: its files for a local folder, the ``datasets`` fingerprints of its
    splits (which follow the downloaded revision's files) for a Hub dataset, the name for a built-in one."""
    if kind == "local":
        return folder_fingerprint(canonical_source(source, kind))
    if kind == "hub":
        parts = "".join(f"{name}={split._fingerprint};" for name, split in sorted(loaded.items()))
        return "datasets:" + hashlib.sha256(parts.encode()).hexdigest()[:32]
    return f"builtin:{source}"
