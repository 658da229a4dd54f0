"""Time make_long_tailed on an ImageNet-size label column (1,281,167 rows, 1000 classes).

Run: python3 benchmarks/long_tail_split.py [--rows N] [--classes C] [--rho R] [--repeats K]
Prints the best of K runs of the whole split (reading the labels, the LDAM-DRW selection, the select
and the record), next to the same split over a view that already has an indices mapping, and, for
scale, datasets' own column read through that mapping.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from datasets import ClassLabel, Dataset, Features, disable_progress_bars

from ltkd_hf.data import get_class_counts, make_long_tailed


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_281_167)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rho", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for flag, value in (("--rows", args.rows), ("--classes", args.classes), ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag} {value}: pass at least 1")
    if args.rows < 30 * args.classes:
        parser.error(f"--rows {args.rows}: pass at least 30 x --classes ({30 * args.classes}), so every class draws "
                     "images and the long tail keeps at least one of each")
    if args.rho < 1:
        parser.error(f"--rho {args.rho:g}: pass an imbalance factor of at least 1")
    disable_progress_bars()

    # ImageNet-1k's train split has 732..1300 images per class; a uniform draw of labels is close enough.
    labels = np.random.RandomState(0).randint(0, args.classes, args.rows)
    features = Features({"label": ClassLabel(num_classes=args.classes)})
    dataset = Dataset.from_dict({"label": labels}, features=features)
    view = dataset.select(np.random.RandomState(1).permutation(args.rows))

    plain = best_time(lambda: make_long_tailed(dataset, args.rho), args.repeats)
    mapped = best_time(lambda: make_long_tailed(view, args.rho), args.repeats)
    # For scale: datasets' own column access through the same indices mapping (what the split avoids).
    public_read = best_time(lambda: view.with_format("arrow")["label"].to_numpy(), args.repeats)
    kept = sum(get_class_counts(make_long_tailed(dataset, args.rho)))
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"rows={args.rows:,} classes={args.classes} rho={args.rho:g} -> kept {kept:,} rows")
    print(f"make_long_tailed, plain Arrow table : {plain:.3f} s (best of {args.repeats})")
    print(f"make_long_tailed, indices-mapped view: {mapped:.3f} s (best of {args.repeats})")
    print(f"for scale, view.with_format('arrow')['label'] alone: {public_read:.3f} s")
    verdict = "met" if max(plain, mapped) <= 2 else "MISSED"
    print(f"ratio mapped / plain: {mapped / plain:.2f}x; target <= 2 s: {verdict}")


if __name__ == "__main__":
    main()
