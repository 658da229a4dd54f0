"""GPU check of DistillationTrainer under bf16 and fp16 autocast (needs CUDA; run where a GPU is lent).

    python benchmarks/mixed_precision_check.py

For each precision it trains the paper's CIFAR pair (cifar_resnet32x4 -> cifar_resnet8x4, 100 classes) for a
few steps on random data and checks: the teacher holds weights in the half dtype and stays frozen; every
logged loss component is finite; the student moved; and the first step's LTKD terms (learning rate 0) agree
with the float32 run to within the half-precision error of the models' logits.
"""

from __future__ import annotations

import math
import tempfile

import timm
import torch

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf import DistillationConfig, DistillationTrainer
from ltkd_hf.models import create_student
from trainer_speed import CLASS_COUNTS, NUM_CLASSES, InMemory  # the script folder is on sys.path


def run(precision: str, learning_rate: float, steps: int):
    torch.manual_seed(0)
    student = create_student("cifar_resnet8x4", num_classes=NUM_CLASSES)
    teacher = timm.create_model("cifar_resnet32x4", num_classes=NUM_CLASSES)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    start = {k: v.clone() for k, v in student.state_dict().items()}
    with tempfile.TemporaryDirectory() as out:
        config = DistillationConfig(
            output_dir=out,
            per_device_train_batch_size=64,
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
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=InMemory(64 * steps),
            class_counts=CLASS_COUNTS,
        )
        trainer.train()
    teacher_dtype = next(trainer.teacher.parameters()).dtype
    frozen = all(torch.equal(v.float().cpu(), before[k].to(v.dtype).float()) for k, v in teacher.state_dict().items())
    moved = any(not torch.equal(v.cpu(), start[k]) for k, v in student.state_dict().items())
    logs = [h for h in trainer.state.log_history if "cross_group" in h]
    return teacher_dtype, frozen, moved, logs


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("mixed_precision_check.py needs a CUDA GPU.")
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    reference = run("fp32", 0.0, 1)[3][0]
    failures = []
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        teacher_dtype, frozen, _, first = run(precision, 0.0, 1)
        _, _, moved, logs = run(precision, 0.05, 5)
        terms = ("loss", "ce", "cross_group", "within_group", "distill")
        finite = all(math.isfinite(h[k]) for h in logs for k in terms)
        rel = {k: abs(first[0][k] - reference[k]) / abs(reference[k]) for k in ("ce", "cross_group", "within_group")}
        ok = teacher_dtype == dtype and frozen and moved and finite and max(rel.values()) < 0.05
        print(
            f"{precision}: teacher dtype {teacher_dtype}, teacher frozen {frozen}, student moved {moved}, "
            f"all components finite {finite}, first-step relative difference to fp32 "
            + ", ".join(f"{k} {v:.2e}" for k, v in rel.items())
            + f" -> {'OK' if ok else 'FAIL'}"
        )
        if not ok:
            failures.append(precision)
    if failures:
        raise SystemExit(f"mixed precision check failed for {failures}")


if __name__ == "__main__":
    main()
