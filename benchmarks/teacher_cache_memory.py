"""Memory of two processes reading one teacher-logit cache: memory-mapped (what DistillationTrainer does) against
each process loading its own copy.

A cache the size of CIFAR-100-LT's (rho = 100: 10,847 training images x 162 crop-and-flip outcomes x 100 classes,
float32: 703 MB) is written with synthetic logits (the memory does not depend on their values), then two processes
(as two training processes of one machine) open it and read every row of it, in batches as training looks them
up, and report how much their memory grew, while both still hold it: RSS (resident pages, shared file pages
included in each), its file-backed part, and PSS (shared pages divided among the processes that map them: what
each costs the machine). Linux only (``/proc/self/smaps_rollup``).

    python benchmarks/teacher_cache_memory.py                    # CIFAR-100-LT's size
    python benchmarks/teacher_cache_memory.py --images 2000      # smaller
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path

import numpy as np
import torch

from ltkd_hf.teacher_cache import FILLED_NAME, KEY_NAME, LOGITS_NAME, TeacherLogitCache


def memory_mib() -> dict[str, float]:
    """This process's RSS, its file-backed part and PSS, in MiB (``/proc/self/smaps_rollup``)."""
    values = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Pss_File", "Pss_Anon"):
            values[name] = int(rest.split()[0]) / 1024
    status = {k: v for k, _, v in (l.partition(":") for l in Path("/proc/self/status").read_text().splitlines())}
    values["RssFile"] = int(status["RssFile"].split()[0]) / 1024
    return values


def write_cache(folder: Path, images: int, classes: int) -> dict:
    """A full cache of synthetic logits (``images x 162 x classes`` float32, every row filled) with its key; returns
    the key."""
    key = {"synthetic": True, "num_images": images, "outcomes": 162, "classes": classes}
    logits = np.lib.format.open_memmap(folder / LOGITS_NAME, mode="w+", dtype=np.float32, shape=(images, 162, classes))
    rng = np.random.default_rng(0)
    for start in range(0, images, 512):
        block = logits[start : start + 512]
        block[:] = rng.standard_normal(block.shape, dtype=np.float32)
    logits.flush()
    del logits
    np.save(folder / FILLED_NAME, np.ones((images, 162), dtype=np.uint8))
    (folder / KEY_NAME).write_text(json.dumps(key))
    return key


def no_teacher(pixels: torch.Tensor) -> torch.Tensor:
    raise AssertionError("every row of the cache is filled: the teacher never runs")


def reader(folder: str, key: dict, mapped: bool, batch: int, barrier, results) -> None:
    """Open the cache (memory-mapped, or a private copy), read every row in training-sized batches, and report the
    memory once the other reader has read it too."""
    torch.set_num_threads(1)
    before = memory_mib()
    cache = TeacherLogitCache.open(folder, key)
    if not mapped:
        cache.logits = np.array(cache.logits)  # this process's own copy
    images, outcomes = cache.logits.shape[:2]
    rows = torch.randperm(images * outcomes, generator=torch.Generator().manual_seed(0))
    total = 0.0
    for start in range(0, len(rows), batch):
        pair = rows[start : start + batch]
        total += float(cache.lookup(pair // outcomes, pair % outcomes, torch.empty(len(pair)), no_teacher).sum())
    barrier.wait()  # both processes hold the cache now
    after = memory_mib()
    results.put({name: after[name] - before[name] for name in after})
    barrier.wait()


def measure(folder: Path, key: dict, mapped: bool, batch: int) -> list[dict[str, float]]:
    """The memory of two reader processes (``mapped``: memory-mapped; else each with its own copy)."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=reader, args=(str(folder), key, mapped, batch, barrier, results))
                 for _ in range(2)]
    for process in processes:
        process.start()
    reports = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10847, help="training images (CIFAR-100-LT rho 100: 10847)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4096, help="rows looked up at once")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = write_cache(folder, opts.images, opts.classes)
        size = (folder / LOGITS_NAME).stat().st_size / 2**20
        print(f"\nCache: {opts.images} images x 162 outcomes x {opts.classes} classes, float32: {size:.0f} MiB; "
              "two processes, each reading every row\n")
        print("| each process (growth while reading) | RSS MiB | of it file-backed | PSS MiB | both processes' PSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for mapped, label in ((True, "memory-maps the cache (the trainer)"), (False, "loads its own copy")):
            reports = measure(folder, key, mapped, opts.batch)
            rss = max(r["Rss"] for r in reports)
            file_backed = max(r["RssFile"] for r in reports)
            pss = max(r["Pss"] for r in reports)
            print(f"| {label} | {rss:.0f} | {file_backed:.0f} | {pss:.0f} | {sum(r['Pss'] for r in reports):.0f} |")


if __name__ == "__main__":
    main()
