"""The ``--device`` flag of the benchmarks, and its check: a CUDA run on a machine without a GPU is one line."""

from __future__ import annotations

import argparse

import torch


def add_device_argument(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default=default,
                        help=f"where to measure (default {default})")


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """``parser.error`` (one line, exit 2) for ``--device cuda`` where torch finds no CUDA GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA GPU; run it where one is, or pass --device cpu")
