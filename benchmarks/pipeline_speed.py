"""The recipe's real data path against the compute alone: training steps/s side by side.

Pipeline: an image folder of PNGs -> ``load_image_dataset`` -> ``ImageSplits.long_tailed`` -> the student's transforms
(decode, random crop with padding, flip, normalise) -> the data loader -> teacher and student in
``DistillationTrainer`` (LTKD). Bare loop: the same models, batch, optimizer and loss over tensors already in
memory, no decoding, no transforms, no Trainer. In-memory: the same folder decoded once into uint8 tensors
(``in_memory_datasets``), batches cropped, flipped and normalised on the device (``device_augmentation=True``),
through the same trainer: the recipes' ``--in_memory_data true``. All are timed over the same steps after warm-up,
in interleaved rounds; the ratio pipeline / bare loop is what the data path and the trainer cost together
(target >= 0.9 on CPU).

    python benchmarks/pipeline_speed.py                          # the demo's pair: cifar_resnet8x4 -> cifar_wrn_40_1
    python benchmarks/pipeline_speed.py --workers 2 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf import DistillationConfig, DistillationTrainer, SplitInfo
from ltkd_hf.data import (
    apply_transforms,
    collate_fn,
    collate_images,
    in_memory_datasets,
    load_image_dataset,
)
from ltkd_hf.losses import create_loss
from ltkd_hf.models import create_student, unwrap_timm

from devices import add_device_argument, check_device
from trainer_speed import StepTimer, synchronize

TEACHER, STUDENT, NUM_CLASSES = "cifar_resnet8x4", "cifar_wrn_40_1", 10


def write_folder(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in range(NUM_CLASSES):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def models(device: torch.device):
    torch.manual_seed(0)
    student = create_student(STUDENT, num_classes=NUM_CLASSES)
    teacher = timm.create_model(TEACHER, num_classes=NUM_CLASSES).to(device).eval().requires_grad_(False)
    return student, teacher


def pipeline_steps_per_s(folder: Path, opts, device: torch.device, in_memory: bool = False) -> float:
    """The recipes' data path, through the loader into the trainer: images decoded and augmented on the fly
    (``apply_transforms``), or with ``in_memory`` decoded once into uint8 tensors and augmented on the device."""
    splits = load_image_dataset(str(folder)).long_tailed(1.0)
    train = splits["train"]
    student, teacher = models(device)
    data_config = timm.data.resolve_data_config(model=unwrap_timm(student))
    if in_memory:
        data, collator = in_memory_datasets({"train": train}, data_config), collate_images
    else:
        data, collator = apply_transforms({"train": train, "test": splits["test"]}, data_config), collate_fn
    timer = StepTimer(opts.warmup, device)
    with tempfile.TemporaryDirectory() as out:
        config = DistillationConfig(
            output_dir=out, per_device_train_batch_size=opts.batch, max_steps=opts.warmup + opts.steps,
            learning_rate=0.05, weight_decay=5e-4, optim="sgd", optim_args="momentum=0.9",
            lr_scheduler_type="constant", save_strategy="no", logging_steps=10**9, report_to="none",
            use_cpu=device.type == "cpu", dataloader_num_workers=opts.workers, disable_tqdm=True,
            dataloader_drop_last=True, dataloader_pin_memory=device.type == "cuda", max_grad_norm=0.0,
            device_augmentation=in_memory,
        )
        DistillationTrainer(model=student, teacher_model=teacher, args=config, train_dataset=data["train"],
                            split_info=splits.split_info, data_collator=collator,
                            callbacks=[timer]).train()
    return opts.steps / (timer.end - timer.start)


def bare_steps_per_s(images: torch.Tensor, labels: torch.Tensor, counts, opts, device: torch.device) -> float:
    """The compute alone: preprocessed tensors in memory, random batches, the same models, loss and optimizer."""
    student, teacher = models(device)
    student = unwrap_timm(student).to(device).train()
    loss_fn = create_loss("ltkd", groups=SplitInfo.from_counts(counts).groups(3)).to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    start = None
    for step in range(1, opts.warmup + opts.steps + 1):
        index = torch.randint(0, len(labels), (opts.batch,), generator=generator)
        x, y = images[index].to(device), labels[index].to(device)
        logits = student(x)
        with torch.no_grad():
            t = teacher(x)
        loss = F.cross_entropy(logits, y) + loss_fn(logits, t, y)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == opts.warmup:
            synchronize(device)
            start = time.perf_counter()
    synchronize(device)
    return opts.steps / (time.perf_counter() - start)


LOOPS = {
    "bare": "bare loop (tensors in memory)",
    "pipeline": "pipeline (PNG folder -> trainer)",
    "in_memory": "in-memory uint8 + device augmentation -> trainer",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (also parsed by gpu_suite.py, so its commands are exact)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes of the pipeline")
    parser.add_argument("--per-class", type=int, default=80, help="training PNGs per class in the folder")
    return parser


def measure(opts: argparse.Namespace) -> dict[str, float]:
    """Median steps/s of each loop in LOOPS (keyed by its name) over ``opts.rounds`` interleaved rounds."""
    device = torch.device(opts.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_folder(folder, opts.per_class)
        train = load_image_dataset(str(folder))["train"]
        student, _ = models(device)
        eval_data = apply_transforms({"test": train}, timm.data.resolve_data_config(model=unwrap_timm(student)))["test"]
        batch = collate_fn([eval_data[i] for i in range(len(eval_data))])
        counts = np.bincount(batch["labels"].numpy(), minlength=NUM_CLASSES).tolist()
        runs: dict[str, list[float]] = {name: [] for name in LOOPS}
        for _ in range(opts.rounds):
            runs["bare"].append(bare_steps_per_s(batch["pixel_values"], batch["labels"], counts, opts, device))
            runs["pipeline"].append(pipeline_steps_per_s(folder, opts, device))
            runs["in_memory"].append(pipeline_steps_per_s(folder, opts, device, in_memory=True))
    return {k: statistics.median(v) for k, v in runs.items()}


def markdown(med: dict[str, float]) -> str:
    """The steps/s table of `measure`'s result."""
    return "\n".join(["| loop | steps/s |", "|---|---|", *(f"| {LOOPS[k]} | {v:.2f} |" for k, v in med.items())])


def main() -> None:
    parser = build_parser()
    opts = parser.parse_args()
    check_device(parser, opts.device)
    med = measure(opts)
    device = torch.device(opts.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{name}, {TEACHER} -> {STUDENT}, batch {opts.batch}, {opts.workers} loader workers, "
          f"median of {opts.rounds} rounds x {opts.steps} steps\n")
    print(markdown(med))
    print(f"\npipeline / bare loop: {med['pipeline'] / med['bare']:.3f}x (target >= 0.9)")
    print(f"in-memory / pipeline: {med['in_memory'] / med['pipeline']:.3f}x")


if __name__ == "__main__":
    main()
