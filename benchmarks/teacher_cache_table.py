"""Wall time of ``ltkd-table`` over the five logit losses (kd, dkd, dist, bkd, ltkd) x 1 seed, with and without the
teacher-logit cache (``--teacher_cache true``), side by side in one run.

The demo data (the built-in digits, made long-tailed) with the paper's CIFAR pair: a ``cifar_resnet32x4`` teacher,
trained once here with ``ltkd-teacher`` (not timed: both tables distil from that folder with ``--teacher``), and a
``cifar_resnet8x4`` student, in-memory data. The cached table starts from no cache (deleted before it runs): its
first cell fills the cache as it draws its inputs, the other cells of the seed draw the same inputs and read them.
Besides each table's wall time the script records each cell's time inside its training loop
(``DistillationTrainer.train``) and the share of teacher rows the cached cells read from the cache.

    python benchmarks/teacher_cache_table.py                           # CPU: 16 px, rho 100, 4 epochs per cell
    python benchmarks/teacher_cache_table.py --epochs 30 --imbalance_factor 20   # the demo's length
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from unittest import mock

from ltkd_hf import DistillationTrainer
from ltkd_hf.cli import table, teacher

LOSSES = ["kd", "dkd", "dist", "bkd", "ltkd"]


@contextmanager
def timed_cells() -> Iterator[list[tuple[float, int, int]]]:
    """While open, each call of ``DistillationTrainer.train`` appends (seconds, teacher-logit cache reads, lookups;
    0, 0 without the cache) to the yielded list."""
    calls, train = [], DistillationTrainer.train

    def timed(trainer, *args, **kwargs):
        start = time.perf_counter()
        try:
            return train(trainer, *args, **kwargs)
        finally:
            cache = trainer.teacher_cache
            calls.append((time.perf_counter() - start, cache.hits if cache else 0, cache.lookups if cache else 0))

    with mock.patch.object(DistillationTrainer, "train", timed):
        yield calls


def common(opts) -> list[str]:
    return ["--dataset", "builtin:digits", "--imbalance_factor", str(opts.imbalance_factor), "--input_size",
            str(opts.input_size), "--in_memory_data", "true", "--verify_images", "false", "--disable_tqdm", "true",
            "--save_strategy", "no", "--logging_steps", "1000", "--lr_decay_epochs", "none",
            "--lr_scheduler_type", "cosine"]


def run_table(opts, teacher_folder: Path, out: Path, cached: bool) -> dict:
    """One table's wall time, and each cell's training-loop seconds and cache reads / lookups."""
    argv = [*common(opts), "--teacher", str(teacher_folder), "--student", "cifar_resnet8x4", "--losses", *LOSSES,
            "--seeds", "0", "--num_train_epochs", str(opts.epochs), "--warmup_epochs", "0", "--output_dir", str(out),
            "--teacher_cache", str(cached).lower()]
    with timed_cells() as cells:
        start = time.perf_counter()
        table.main(argv)
        wall = time.perf_counter() - start
    return {"wall": wall, "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/bench-teacher-cache")
    parser.add_argument("--epochs", type=float, default=4, help="epochs of each distillation cell")
    parser.add_argument("--teacher_epochs", type=float, default=2)
    parser.add_argument("--imbalance_factor", type=float, default=100)
    parser.add_argument("--input_size", type=int, default=16)
    opts = parser.parse_args()
    out = Path(opts.output_dir)
    teacher.main([*common(opts), "--teacher_architecture", "cifar_resnet32x4", "--teacher_epochs",
                  str(opts.teacher_epochs), "--output_dir", str(out / "teacher-run")])
    teacher_folder = out / "teacher-run" / "teacher"
    results = {}
    for name, cached in (("online", False), ("cached", True)):
        shutil.rmtree(out / name, ignore_errors=True)  # every cell trains
        shutil.rmtree(teacher_folder.parent / "teacher-logit-cache", ignore_errors=True)  # the cached table fills it
        results[name] = run_table(opts, teacher_folder, out / name, cached)
    online, cached = results["online"], results["cached"]
    print(f"\n{len(LOSSES)} logit losses x 1 seed, {opts.epochs:g} epochs per cell, cifar_resnet32x4 -> cifar_resnet8x4, "
          f"builtin:digits rho {opts.imbalance_factor:g} at {opts.input_size} px\n")
    print("| table | wall s | " + " | ".join(f"{loss} s" for loss in LOSSES) + " | teacher rows read from the cache |")
    print("|---|---:|" + "---:|" * len(LOSSES) + "---|")
    for name, r in results.items():
        hits, lookups = sum(c[1] for c in r["cells"]), sum(c[2] for c in r["cells"])
        read = f"{hits} of {lookups} ({100 * hits / lookups:.0f}%)" if lookups else "—"
        print(f"| {name} | {r['wall']:.0f} | " + " | ".join(f"{c[0]:.0f}" for c in r["cells"]) + f" | {read} |")
    print(f"\ncached / online wall time: {cached['wall'] / online['wall']:.3f}x (target <= 0.6)")
    (out / "results.json").write_text(json.dumps({"options": vars(opts), "results": results}, indent=1))


if __name__ == "__main__":
    main()
