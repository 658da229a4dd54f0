"""Start two CPU processes with torchrun (gloo) on a free local port, for the distributed tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: str | os.PathLike, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 script args...``: one thread per process, this folder importable."""
    python_path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *map(str, args),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
