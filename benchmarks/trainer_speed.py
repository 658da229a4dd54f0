"""DistillationTrainer against a bare PyTorch loop doing the same work, and LTKD against KD in the trainer.

Same models (--pair cifar, the default: the paper's CIFAR pair, cifar_resnet32x4 -> cifar_resnet8x4; --pair vit: a
ViT student, vit_tiny_patch16_224 at img_size 32 with 4-px patches (64 tokens), from a resnet18 teacher at 32 px;
100 classes), batch 64, SGD (momentum 0.9, weight decay 5e-4, no gradient clipping), in-memory 32x32 data
(--image_size: another side, e.g. 8 for a quick check of the script), the same loss. In both pairs the teacher takes
the student's input as it is (same size and mean/std in their pretrained_cfg: for the vit pair the teacher's is set
to the student's 32 px and normalisation), so neither loop converts the batch for the teacher. The trainer runs with
its defaults, which sync the host with the GPU every step (Trainer's logging_nan_inf_filter, our teacher and loss
NaN checks, and accelerate's blocking copy of each batch to the device), and once more with all three off ("no
per-step sync": accelerator_config={"non_blocking": True}), which is what the bare loop does. Each configuration is
timed over the same number of steps after warm-up steps, in interleaved rounds so machine noise hits all of them
alike; the table reports the median steps/s and the ratios.

--loops picks the configurations (default: the bare loop and the four trainer ones above); also available:
ltkd-compiled (the trainer, no per-step sync, with torch_compile on student and teacher; the first warm-up
steps compile), the feature baselines reviewkd and catkd (trainer defaults; CIFAR pairs only), and ltkd-cached:
the trainer reading the teacher's logits from a teacher-logit cache (teacher_cache=True) instead of running the
teacher, on uint8 in-memory images (one batch of them, augmented on the device each step: more data work than the
bare loop's ready float batches). One untimed run of the same seed fills the cache first (the teacher runs on the
rows it draws, as online); the timed runs draw the same rows and read them all. The filling run's steps/s is
printed beside them.

    python benchmarks/trainer_speed.py                  # CPU
    python benchmarks/trainer_speed.py --device cuda --bf16
    python benchmarks/trainer_speed.py --pair vit --device cuda --bf16
    python benchmarks/trainer_speed.py --device cuda --bf16 --loops bare,ltkd-nosync,ltkd-compiled
    python benchmarks/trainer_speed.py --loops bare,ltkd,ltkd-cached    # the teacher-logit cache
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import timm
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf import ClassGroups, DistillationConfig, DistillationTrainer
from ltkd_hf.data import InMemoryImages, collate_images
from ltkd_hf.losses import create_loss
from ltkd_hf.models import create_student, unwrap_timm
from devices import add_device_argument, check_device

NUM_CLASSES = 100
CLASS_COUNTS = [int(500 * 100 ** (-c / 99)) for c in range(NUM_CLASSES)]

# --pair: (student architecture, its timm kwargs), (teacher architecture, its timm kwargs)
PAIRS = {
    "cifar": (("cifar_resnet8x4", {}), ("cifar_resnet32x4", {})),
    "vit": (("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}), ("resnet18", {})),
}


def make_pair(pair: str, wrap_student: bool, image_size: int):
    """(student, teacher) of `pair`, freshly initialised; the student wrapped by create_student (the trainer's
    input) or the bare timm model. Both pretrained_cfgs declare ``image_size`` px and the student's mean/std, so
    the trainer converts nothing, as the bare loop does not."""
    (student_name, student_kwargs), (teacher_name, teacher_kwargs) = PAIRS[pair]
    if "img_size" in student_kwargs:
        student_kwargs = {**student_kwargs, "img_size": image_size}
    torch.manual_seed(0)
    if wrap_student:
        student = create_student(student_name, num_classes=NUM_CLASSES, **student_kwargs)
    else:
        student = timm.create_model(student_name, num_classes=NUM_CLASSES, **student_kwargs)
    teacher = timm.create_model(teacher_name, num_classes=NUM_CLASSES, **teacher_kwargs)
    student_cfg = timm.data.resolve_data_config(model=unwrap_timm(student))
    for model in (unwrap_timm(student), teacher):
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, image_size, image_size),
                                "mean": student_cfg["mean"], "std": student_cfg["std"]}
    return student, teacher


class InMemory(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int = 32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, NUM_CLASSES, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def uint8_images(n: int, size: int) -> InMemoryImages:
    """``n`` random uint8 ``size`` x ``size`` training images (what a teacher-logit cache is keyed and looked up
    by)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return InMemoryImages(pixels, torch.randint(0, NUM_CLASSES, (n,), generator=g), train=True)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.start, self.end = warmup, device, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        elif state.global_step == args.max_steps:
            synchronize(self.device)
            self.end = time.perf_counter()


def trainer_config(out: str, loss: str, opts, device: torch.device, sync_free: bool = False, compiled: bool = False,
                   cached: bool = False) -> DistillationConfig:
    """The benchmark's trainer arguments (see the module docstring)."""
    return DistillationConfig(
        output_dir=out,
        per_device_train_batch_size=opts.batch,
        max_steps=opts.warmup + opts.steps,
        learning_rate=0.05,
        weight_decay=5e-4,
        optim="sgd",
        optim_args="momentum=0.9",
        lr_scheduler_type="constant",
        save_strategy="no",
        logging_steps=10**9,
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=opts.bf16,
        dataloader_num_workers=0,
        disable_tqdm=True,
        distill_loss=loss,
        dataloader_drop_last=True,
        dataloader_pin_memory=device.type == "cuda",
        max_grad_norm=0.0,  # the CIFAR recipe (and the bare loop) do not clip gradients
        # the per-step host syncs: Trainer's NaN filter of the logged loss, our teacher and loss NaN/inf checks (one)
        logging_nan_inf_filter=not sync_free,
        check_teacher_finite=not sync_free,
        check_loss_finite=not sync_free,
        # and the blocking host-to-device copy of each batch (the bare loop copies with non_blocking=True)
        accelerator_config={"non_blocking": sync_free},
        torch_compile=compiled,
        torch_compile_backend=(opts.compile_backend or "inductor") if compiled else None,
        device_augmentation=cached,
        teacher_cache=cached,
    )


def trainer_steps_per_s(
    loss: str, data: InMemory, opts, device: torch.device, sync_free: bool = False, compiled: bool = False,
    cached: bool = False,
) -> float:
    student, teacher = make_pair(opts.pair, wrap_student=True, image_size=opts.image_size)
    timer = StepTimer(opts.warmup, device)
    with tempfile.TemporaryDirectory() as out:
        config = trainer_config(out, loss, opts, device, sync_free, compiled, cached)
        inputs = {"train_dataset": data}
        if cached:  # the cache in opts.cache_dir (the same teacher: make_pair draws it from seed 0)
            inputs = {"train_dataset": uint8_images(opts.batch, opts.image_size), "data_collator": collate_images,
                      "teacher_cache_dir": opts.cache_dir}
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            class_counts=CLASS_COUNTS,
            callbacks=[timer],
            **inputs,
        ).train()
    return opts.steps / (timer.end - timer.start)


def bare_loop_steps_per_s(data: InMemory, opts, device: torch.device) -> float:
    """The same work written by hand: loader, autocast, teacher no_grad, LTKD + CE, SGD."""
    student, teacher = make_pair(opts.pair, wrap_student=False, image_size=opts.image_size)
    student = student.to(device).train()
    teacher = teacher.to(device).eval().requires_grad_(False)
    if opts.bf16:
        teacher.to(torch.bfloat16)
    loss_fn = create_loss("ltkd", groups=ClassGroups.from_counts(CLASS_COUNTS, 3)).to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        data, batch_size=opts.batch, shuffle=True, drop_last=True, pin_memory=device.type == "cuda"
    )
    step, start = 0, None
    while True:
        for batch in loader:
            x, y = batch["pixel_values"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
                logits = student(x)
                with torch.no_grad():
                    t = teacher(x.to(torch.bfloat16) if opts.bf16 else x).float()
            loss = F.cross_entropy(logits.float(), y) + loss_fn(logits, t, y)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == opts.warmup:
                synchronize(device)
                start = time.perf_counter()
            if step == opts.warmup + opts.steps:
                synchronize(device)
                return opts.steps / (time.perf_counter() - start)


# --loops: name -> (table label, the trainer_steps_per_s arguments; None for the bare loop)
LOOPS = {
    "bare": ("bare loop (LTKD)", None),
    "ltkd": ("DistillationTrainer (LTKD)", {"loss": "ltkd"}),
    "kd": ("DistillationTrainer (KD)", {"loss": "kd"}),
    "ltkd-nosync": ("DistillationTrainer (LTKD, no per-step sync)", {"loss": "ltkd", "sync_free": True}),
    "kd-nosync": ("DistillationTrainer (KD, no per-step sync)", {"loss": "kd", "sync_free": True}),
    "ltkd-compiled": (
        "DistillationTrainer (LTKD, no per-step sync, torch_compile)",
        {"loss": "ltkd", "sync_free": True, "compiled": True},
    ),
    "reviewkd": ("DistillationTrainer (ReviewKD)", {"loss": "reviewkd"}),
    "catkd": ("DistillationTrainer (CAT-KD)", {"loss": "catkd"}),
    "ltkd-cached": ("DistillationTrainer (LTKD, teacher-logit cache)", {"loss": "ltkd", "cached": True}),
}
DEFAULT_LOOPS = "bare,ltkd,kd,ltkd-nosync,kd-nosync"


def loop_names(value: str) -> list[str]:
    """The --loops value as a list of LOOPS names."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or any(name not in LOOPS for name in names):
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of {', '.join(LOOPS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (also parsed by gpu_suite.py, so its commands are exact)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--pair", choices=sorted(PAIRS), default="cifar", help="student and teacher (see above)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32, help="input side in pixels (default 32, CIFAR's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loops", type=loop_names, default=DEFAULT_LOOPS, help=f"configurations (default {DEFAULT_LOOPS})"
    )
    parser.add_argument(
        "--compile_backend", help="torch.compile backend of the ltkd-compiled loop (default inductor)"
    )
    parser.add_argument("--cache_dir", default=None, help="ltkd-cached: keep the cache here (default: a temporary one)")
    return parser


def check_options(opts: argparse.Namespace) -> None:
    """Refuse an image size the pairs cannot take, and a flag of a loop that ``opts.loops`` does not run."""
    if opts.image_size < 4 or opts.image_size % 4:
        raise ValueError(f"--image_size {opts.image_size}: the vit pair's patches and the CIFAR networks' two "
                         "stride-2 stages need a positive multiple of 4; give e.g. 8 or 32")
    for flag, value, loop in (("--compile_backend", opts.compile_backend, "ltkd-compiled"),
                              ("--cache_dir", opts.cache_dir, "ltkd-cached")):
        if value is not None and loop not in opts.loops:
            raise ValueError(f"{flag} {value}: sets the {loop} loop, which --loops {','.join(opts.loops)} does not "
                             f"run; add {loop} to --loops or drop {flag}")


def measure(opts: argparse.Namespace) -> dict[str, float]:
    """Median steps/s of each of ``opts.loops`` (keyed by its LOOPS name) over ``opts.rounds`` interleaved rounds."""
    check_options(opts)
    device = torch.device(opts.device)
    data = InMemory(opts.batch * (opts.warmup + opts.steps + 1), opts.image_size)
    runs: dict[str, list[float]] = {name: [] for name in opts.loops}
    if "ltkd-cached" in opts.loops:
        with tempfile.TemporaryDirectory() as cache_dir:
            cached_opts = argparse.Namespace(**{**vars(opts), "cache_dir": opts.cache_dir or cache_dir})
            return _measure(cached_opts, device, data, runs)
    return _measure(opts, device, data, runs)


def _measure(opts, device, data, runs) -> dict[str, float]:
    if "ltkd-cached" in opts.loops:  # filled by a first run of the same seed, outside the timed rounds
        runs["ltkd-cached filling"] = [trainer_steps_per_s(loss="ltkd", data=data, opts=opts, device=device,
                                                           cached=True)]
    for _ in range(opts.rounds):
        for name in opts.loops:
            trainer_kwargs = LOOPS[name][1]
            if trainer_kwargs is None:
                runs[name].append(bare_loop_steps_per_s(data, opts, device))
            else:
                runs[name].append(trainer_steps_per_s(data=data, opts=opts, device=device, **trainer_kwargs))
    return {name: statistics.median(v) for name, v in runs.items()}


def markdown(med: dict[str, float]) -> str:
    """The steps/s table of `measure`'s result."""
    rows = [f"| {LOOPS[k][0]} | {v:.2f} |" for k, v in med.items() if k in LOOPS]
    return "\n".join(["| loop | steps/s |", "|---|---|", *rows])


def main() -> None:
    parser = build_parser()
    opts = parser.parse_args()
    check_device(parser, opts.device)
    try:
        check_options(opts)
    except ValueError as err:
        parser.error(str(err))
    med = measure(opts)
    device = torch.device(opts.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    precision = "bf16" if opts.bf16 else "fp32"
    if opts.pair != "cifar":  # the default pair's header is as it always was
        (student_name, student_kwargs), (teacher_name, _) = PAIRS[opts.pair]
        kwargs = ", ".join(f"{k}={opts.image_size if k == 'img_size' else v}" for k, v in student_kwargs.items())
        name = f"{teacher_name} -> {student_name} ({kwargs}), {name}"
    size = "" if opts.image_size == 32 else f", {opts.image_size}x{opts.image_size} images"
    print(f"\n{name}, batch {opts.batch}{size}, {precision}, median of {opts.rounds} rounds x {opts.steps} steps\n")
    print(markdown(med))
    for ltkd_name, kd_name, suffix in (("ltkd", "kd", ""), ("ltkd-nosync", "kd-nosync", ", no per-step sync")):
        if "bare" in med and ltkd_name in med:
            print(f"\nTrainer{suffix} / bare loop (LTKD): {med[ltkd_name] / med['bare']:.3f}x speed (target >= 0.9)")
        if ltkd_name in med and kd_name in med:
            print(f"LTKD step cost / KD step cost{suffix}: {med[kd_name] / med[ltkd_name]:.3f}x (target <= 1.05)")
    if "ltkd-cached" in med:
        if "bare" in med:
            print(f"\nTrainer with the teacher-logit cache / bare loop (online teacher): "
                  f"{med['ltkd-cached'] / med['bare']:.3f}x speed (target >= 2 on CPU)")
        print(f"The run that filled the cache (the teacher on every row it drew): {med['ltkd-cached filling']:.2f} "
              "steps/s; the timed runs drew the same rows and read them all.")


if __name__ == "__main__":
    main()
