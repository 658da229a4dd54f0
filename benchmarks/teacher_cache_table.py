"""Wall time of ``ltkd-table`` over the five logit losses (kd, dkd, dist, bkd, ltkd) x 1 seed, with and without the
teacher-logit cache (``--teacher_cache true``), side by side in one run.

The demo data (the built-in digits, made long-tailed) with the paper's CIFAR pair: a ``cifar_resnet32x4`` teacher,
trained once here with ``ltkd-teacher`` (not timed: both tables distil from that folder with ``--teacher``), and a
``cifar_resnet8x4`` student, in-memory data. The cached table's time includes building the cache (deleted before
it runs). Besides each table's wall time the script records the time inside each cell's training loop
(``DistillationTrainer.train``, which includes the build) and the build alone, and from them projects both tables to
longer runs: the training loop's per-epoch time is measured, the rest (data, models, reports) is kept as measured.

    python benchmarks/teacher_cache_table.py                           # CPU: 16 px, rho 100, 4 epochs per cell
    python benchmarks/teacher_cache_table.py --epochs 30 --input_size 20 --imbalance_factor 20   # the demo's own
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from ltkd_hf import DistillationTrainer
from ltkd_hf.cli import table, teacher
from ltkd_hf.teacher_cache import TeacherLogitCache

LOSSES = ["kd", "dkd", "dist", "bkd", "ltkd"]


class Clock:
    """Seconds spent inside ``owner.name`` (a method or a classmethod, called on the class), summed over calls,
    while installed."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.seconds = owner, name, 0.0
        self.descriptor, self.call = owner.__dict__[name], getattr(owner, name)

    def __enter__(self) -> "Clock":
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.owner, self.name, self.descriptor)


def common(opts) -> list[str]:
    return ["--dataset", "builtin:digits", "--imbalance_factor", str(opts.imbalance_factor), "--input_size",
            str(opts.input_size), "--in_memory_data", "true", "--verify_images", "false", "--disable_tqdm", "true",
            "--save_strategy", "no", "--logging_steps", "1000", "--lr_decay_epochs", "none",
            "--lr_scheduler_type", "cosine"]


def run_table(opts, teacher_folder: Path, out: Path, cached: bool) -> dict[str, float]:
    """One table's wall time, its training loops' time and its cache build time (seconds)."""
    argv = [*common(opts), "--teacher", str(teacher_folder), "--student", "cifar_resnet8x4", "--losses", *LOSSES,
            "--seeds", "0", "--num_train_epochs", str(opts.epochs), "--warmup_epochs", "0", "--output_dir", str(out),
            "--teacher_cache", str(cached).lower()]
    with Clock(DistillationTrainer, "train") as loops, Clock(TeacherLogitCache, "build") as build:
        start = time.perf_counter()
        table.main(argv)
        wall = time.perf_counter() - start
    return {"wall": wall, "loops": loops.seconds, "build": build.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/bench-teacher-cache")
    parser.add_argument("--epochs", type=float, default=4, help="epochs of each distillation cell")
    parser.add_argument("--teacher_epochs", type=float, default=2)
    parser.add_argument("--imbalance_factor", type=float, default=100)
    parser.add_argument("--input_size", type=int, default=16)
    parser.add_argument("--project", type=float, nargs="*", default=[30, 240], help="epochs to project to")
    opts = parser.parse_args()
    out = Path(opts.output_dir)
    teacher.main([*common(opts), "--teacher_architecture", "cifar_resnet32x4", "--teacher_epochs",
                  str(opts.teacher_epochs), "--output_dir", str(out / "teacher-run")])
    teacher_folder = out / "teacher-run" / "teacher"
    results = {}
    for name, cached in (("online", False), ("cached", True)):
        shutil.rmtree(out / name, ignore_errors=True)  # every cell trains
        shutil.rmtree(teacher_folder.parent / "teacher-logit-cache", ignore_errors=True)  # the build is timed
        results[name] = run_table(opts, teacher_folder, out / name, cached)
    online, cached = results["online"], results["cached"]
    cells = len(LOSSES)
    print(f"\n{len(LOSSES)} logit losses x 1 seed, {opts.epochs:g} epochs per cell, cifar_resnet32x4 -> cifar_resnet8x4, "
          f"builtin:digits rho {opts.imbalance_factor:g} at {opts.input_size} px\n")
    print("| table | wall s | in training loops s | of it the cache build s | rest s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall']:.0f} | {r['loops']:.0f} | {r['build']:.0f} | {r['wall'] - r['loops']:.0f} |")
    print(f"\ncached / online wall time: {cached['wall'] / online['wall']:.3f}x (target <= 0.6)")
    per_epoch = {name: (r["loops"] - r["build"]) / (cells * opts.epochs) for name, r in results.items()}
    print(f"one cell's epoch: {per_epoch['online']:.2f} s online, {per_epoch['cached']:.2f} s cached; the build = "
          f"{cached['build'] / (per_epoch['online'] - per_epoch['cached']):.0f} cell-epochs of the teacher's time")
    for epochs in opts.project:
        projected = {name: r["wall"] - r["loops"] + r["build"] + cells * epochs * per_epoch[name]
                     for name, r in results.items()}
        print(f"projected to {epochs:g} epochs per cell: {projected['online']:.0f} s online, {projected['cached']:.0f} s "
              f"cached: {projected['cached'] / projected['online']:.3f}x")
    (out / "results.json").write_text(json.dumps({"options": vars(opts), "results": results}, indent=1))


if __name__ == "__main__":
    main()
