"""GPU check of DistillationTrainer under bf16 and fp16 autocast (run where a GPU is lent).

    python benchmarks/mixed_precision_check.py
    # a CPU smoke run (checks the script, measures nothing):
    python benchmarks/mixed_precision_check.py --device cpu --precisions bf16 --batch 2 --steps 2 --image_size 8

For each precision it trains the paper's CIFAR pair (cifar_resnet32x4 -> cifar_resnet8x4, 100 classes) for a
few steps on random data and checks: the teacher holds weights in the half dtype (on CUDA; the trainer keeps it
in float32 on CPU) and stays frozen; every logged loss component is finite; the student moved; and the first
step's LTKD terms (learning rate 0) agree with the float32 run to within the half-precision error of the
models' logits: within 5% of each term, or of 1% of the loss for a term smaller than that (the relative difference
printed is to the term itself).
"""

from __future__ import annotations

import argparse
import math
import tempfile

import timm
import torch

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf import DistillationConfig, DistillationTrainer
from ltkd_hf.models import create_student
from devices import add_device_argument, check_device
from trainer_speed import CLASS_COUNTS, NUM_CLASSES, InMemory

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TERMS = ("loss", "ce", "cross_group", "within_group", "distill")
COMPARED = ("ce", "cross_group", "within_group")  # the first step's terms checked against fp32
MAX_RELATIVE_DIFFERENCE = 0.05  # to fp32, of the first step's terms: the half-precision error of the logits
# A term is judged against at least this share of the fp32 loss: the cross-group KL of a few random samples is ~1e-4,
# where the half-precision logits' absolute error alone is a large relative one (0.4 at batch 4 on a CPU).
FLOOR_SHARE_OF_LOSS = 0.01


def run(precision: str, learning_rate: float, steps: int, batch: int = 64, device: str = "cuda", size: int = 32):
    torch.manual_seed(0)
    student = create_student("cifar_resnet8x4", num_classes=NUM_CLASSES)
    teacher = timm.create_model("cifar_resnet32x4", num_classes=NUM_CLASSES)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    start = {k: v.clone() for k, v in student.state_dict().items()}
    with tempfile.TemporaryDirectory() as out:
        config = DistillationConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=learning_rate,
            optim="sgd",
            lr_scheduler_type="constant",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            disable_tqdm=True,
            dataloader_drop_last=True,
            use_cpu=device == "cpu",
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=InMemory(batch * steps, size),
            class_counts=CLASS_COUNTS,
        )
        trainer.train()
    teacher_dtype = next(trainer.teacher.parameters()).dtype
    frozen = all(torch.equal(v.float().cpu(), before[k].to(v.dtype).float()) for k, v in teacher.state_dict().items())
    moved = any(not torch.equal(v.cpu(), start[k]) for k, v in student.state_dict().items())
    logs = [h for h in trainer.state.log_history if "cross_group" in h]
    return teacher_dtype, frozen, moved, logs


def build_parser() -> argparse.ArgumentParser:
    """The command line of this check (also parsed by gpu_suite.py, so its commands are exact)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser, default="cuda")
    parser.add_argument("--precisions", default="bf16,fp16", help="comma-separated, of bf16 and fp16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps of the run that must move the student")
    parser.add_argument("--image_size", type=int, default=32,
                        help="side of the random training images (the paper's CIFAR 32; a CPU smoke run takes 8, since "
                        "bf16 on a CPU without bf16 instructions takes seconds a step)")
    return parser


def measure(opts: argparse.Namespace) -> dict[str, dict]:
    """Per precision: the teacher's dtype, whether it stayed frozen, whether the student moved, whether every
    logged component stayed finite, the first step's relative difference to fp32 per term, and ``ok``."""
    precisions = opts.precisions.split(",")
    unknown = sorted(set(precisions) - set(HALF_DTYPES))
    if unknown:
        raise ValueError(f"--precisions {opts.precisions!r}: unknown {unknown}; use bf16, fp16 or bf16,fp16.")
    reference = run("fp32", 0.0, 1, opts.batch, opts.device, opts.image_size)[3][0]
    results = {}
    for precision in precisions:
        teacher_dtype, frozen, _, first = run(precision, 0.0, 1, opts.batch, opts.device, opts.image_size)
        _, _, moved, logs = run(precision, 0.05, opts.steps, opts.batch, opts.device, opts.image_size)
        finite = all(math.isfinite(h[k]) for h in logs for k in TERMS)
        rel = {k: abs(first[0][k] - reference[k]) / abs(reference[k]) for k in COMPARED}
        floor = FLOOR_SHARE_OF_LOSS * abs(reference["loss"])
        close = all(abs(first[0][k] - reference[k]) < MAX_RELATIVE_DIFFERENCE * max(abs(reference[k]), floor)
                    for k in COMPARED)
        # The trainer casts the teacher to the half dtype on CUDA only (half matmuls are slow on CPU).
        expected_dtype = HALF_DTYPES[precision] if opts.device == "cuda" else torch.float32
        results[precision] = {
            "teacher_dtype": str(teacher_dtype).removeprefix("torch."),
            "teacher_frozen": frozen,
            "student_moved": moved,
            "finite": finite,
            "relative_difference": rel,
            "ok": teacher_dtype == expected_dtype and frozen and moved and finite and close,
        }
    return results


def main() -> None:
    parser = build_parser()
    opts = parser.parse_args()
    check_device(parser, opts.device)
    name = torch.cuda.get_device_name() if opts.device == "cuda" else "CPU"
    print(name, "torch", torch.__version__)
    results = measure(opts)
    for precision, r in results.items():
        print(
            f"{precision}: teacher dtype {r['teacher_dtype']}, teacher frozen {r['teacher_frozen']}, "
            f"student moved {r['student_moved']}, all components finite {r['finite']}, first-step relative "
            "difference to fp32 " + ", ".join(f"{k} {v:.2e}" for k, v in r["relative_difference"].items())
            + f" -> {'OK' if r['ok'] else 'FAIL'}"
        )
    failures = [precision for precision, r in results.items() if not r["ok"]]
    if failures:
        raise SystemExit(f"mixed precision check failed for {failures}")


if __name__ == "__main__":
    main()
