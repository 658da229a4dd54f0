"""Tiny DistillationTrainer runs for the resume and two-process tests.

python trainer_worker.py run OUT_DIR RESULT [--kill-at-save STEP] [--resume [--then-straight DIR RESULT2]]
    [--reviewkd | --student-init DIR]

run trains 6 steps (checkpoints every 2) and writes the student to RESULT; --then-straight DIR RESULT2: then the
same run again from scratch in DIR, in the same process (a second process would cost its ~15 s of imports).

--student-init DIR: the student starts from the checkpoint folder DIR (config.json + model.safetensors, e.g.
timm.models.save_for_hf's): `pretrained_student`, its backbone loaded and a new 6-class head, instead of the
default test_resnet.

--reviewkd: the ReviewKD setup instead (small CIFAR ResNets with BatchNorm, `reviewkd_setup`, SGD momentum and
weight decay); RESULT then also holds the loss's state as "distill_loss.<key>".

`first_step` and `reviewkd_first_step` run one optimizer step in the calling process, which may be one of a
torchrun launch (two_process_jobs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import timm
import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from tiny_setup import (
    NUM_CLASSES,
    SyntheticImages,
    make_config,
    make_student,
    make_teacher,
    make_trainer,
)
from ltkd_hf.models import create_student, unwrap_timm


def feature_student(seed: int = 0):
    """A small CIFAR ResNet8x4 (widths 16/32/64, BatchNorm) student, built through create_student."""
    torch.manual_seed(seed)
    return create_student(
        "cifar_resnet8x4",
        num_classes=NUM_CLASSES,
        label_names=[f"c{i}" for i in range(NUM_CLASSES)],
        planes=(16, 32, 64),
        stem_width=16,
    )


def feature_teacher(seed: int = 1):
    """A small CIFAR ResNet teacher (widths 32/64/128) whose BatchNorm statistics have seen data."""
    torch.manual_seed(seed)
    teacher = timm.create_model("cifar_resnet8x4", num_classes=NUM_CLASSES, planes=(32, 64, 128), stem_width=16)
    with torch.no_grad():
        teacher.train()(SyntheticImages(16, seed=7).images)
    return teacher.eval()


def pretrained_student(folder, seed: int = 0):
    """The student started from the checkpoint `folder` (create_student's "local-dir:" with pretrained=True): the
    folder's backbone weights, a new NUM_CLASSES head drawn with `seed`, the class names of make_student."""
    torch.manual_seed(seed)
    return create_student(
        f"local-dir:{folder}",
        num_classes=NUM_CLASSES,
        label_names=[f"c{i}" for i in range(NUM_CLASSES)],
        pretrained=True,
    )


def biased_teacher():
    """make_teacher's, with its mass piled on the two head classes (first-step's teacher)."""
    teacher = make_teacher()
    with torch.no_grad():
        teacher.get_classifier().weight.mul_(10.0)
        teacher.get_classifier().bias[:2] += 4.0
    return teacher


def reviewkd_setup(output_dir, **overrides):
    """(student, teacher, config) of the ReviewKD runs: SGD with momentum and weight decay, batch 4."""
    values = dict(distill_loss="reviewkd", per_device_train_batch_size=4, optim_args="momentum=0.9", weight_decay=5e-4)
    values.update(overrides)
    return feature_student(), feature_teacher(), make_config(output_dir, **values)


def trained_state(trainer) -> dict[str, torch.Tensor]:
    """The student's tensors (timm names) and the loss's state as "distill_loss.<key>", on the CPU."""
    state = {k: v for k, v in unwrap_timm(trainer.model.student).state_dict().items()}
    state.update({f"distill_loss.{k}": v for k, v in trainer.loss_fn.state_dict().items()})
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after the checkpoint of `step` is on disk: no clean shutdown at all."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run"])
    parser.add_argument("output_dir")
    parser.add_argument("result")
    parser.add_argument("--kill-at-save", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--then-straight", nargs=2, metavar=("OUT_DIR", "RESULT"), default=None,
                        help="after this run, train the same run from scratch into OUT_DIR, writing RESULT")
    parser.add_argument("--reviewkd", action="store_true", help="the ReviewKD setup (reviewkd_setup)")
    parser.add_argument("--student-init", default=None, help="start the student from this checkpoint folder")
    opts = parser.parse_args()

    if opts.reviewkd and opts.student_init:
        parser.error("--student-init does not apply to the --reviewkd setup")
    if opts.then_straight and not opts.resume:
        parser.error("--then-straight applies to run --resume")
    runs = [(opts.output_dir, opts.result, opts.resume)]
    if opts.then_straight:
        runs.append((*opts.then_straight, False))
    run = reviewkd_six_steps if opts.reviewkd else six_steps
    for output_dir, result, resume in runs:
        run(argparse.Namespace(**{**vars(opts), "output_dir": output_dir, "result": result, "resume": resume}))


def six_steps(opts) -> None:
    """The default run: 6 steps of LTKD, checkpoints every 2, a warm-up ramp, a possible kill; writes the student."""
    config = make_config(
        opts.output_dir,
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=4,
        full_determinism=True,
        warmup_epochs=0.75,  # full weight after 4.5 of the 6 steps: resumed mid-ramp
    )
    callbacks = [KillAfterSave(opts.kill_at_save)] if opts.kill_at_save else []
    if opts.student_init:
        student = pretrained_student(opts.student_init)
    else:
        student = make_student(arch="test_resnet")  # BatchNorm in the student too: its buffers must resume
    trainer = make_trainer(config, model=student, train_dataset=SyntheticImages(24), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=True if opts.resume else None)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, opts.result)


def first_step(
    output_dir,
    result,
    *,
    batch: int = 4,
    samples: int = 16,
    accumulation: int = 1,
    lr: float = 0.0,
    student_init=None,
) -> None:
    """One optimizer step of LTKD with the head-biased teacher; writes `result` (the step's logged terms, JSON,
    from process 0) and `result`.safetensors (the student after the step, timm names). In a torchrun process
    (LOCAL_RANK set) the processes train together over gloo."""
    config = make_config(
        output_dir,
        max_steps=1,
        learning_rate=lr,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        ddp_backend="gloo" if "LOCAL_RANK" in os.environ else None,
    )
    teacher = biased_teacher()
    student = make_student() if student_init is None else pretrained_student(student_init)
    trainer = make_trainer(config, model=student, teacher_model=teacher, train_dataset=SyntheticImages(samples))
    trainer.train()
    if trainer.is_world_process_zero():
        with open(result, "w") as f:
            json.dump(trainer.state.log_history[0], f)
        weights = {k: v.contiguous() for k, v in unwrap_timm(student).state_dict().items()}
        save_file(weights, f"{result}.safetensors")
    trainer.accelerator.wait_for_everyone()


def reviewkd_six_steps(opts) -> None:
    """As `six_steps`, with the ReviewKD setup; RESULT also holds the loss's state."""
    student, teacher, config = reviewkd_setup(
        opts.output_dir, max_steps=6, save_strategy="steps", save_steps=2, full_determinism=True, warmup_epochs=0.75
    )
    callbacks = [KillAfterSave(opts.kill_at_save)] if opts.kill_at_save else []
    trainer = make_trainer(
        config, model=student, teacher_model=teacher, train_dataset=SyntheticImages(24), callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=True if opts.resume else None)
    save_file(trained_state(trainer), opts.result)


def reviewkd_first_step(output_dir, result, *, batch: int, samples: int, lr: float) -> None:
    """One ReviewKD step, no clipping; writes every process's student and loss state to RESULT.rank<i>.safetensors
    and process 0's logged terms to RESULT (JSON)."""
    student, teacher, config = reviewkd_setup(
        output_dir, max_steps=1, learning_rate=lr, per_device_train_batch_size=batch, max_grad_norm=0.0,
        ddp_backend="gloo" if "LOCAL_RANK" in os.environ else None,
    )
    trainer = make_trainer(config, model=student, teacher_model=teacher, train_dataset=SyntheticImages(samples))
    trainer.train()
    save_file(trained_state(trainer), f"{result}.rank{trainer.args.process_index}.safetensors")
    if trainer.is_world_process_zero():
        with open(result, "w") as f:
            json.dump(trainer.state.log_history[0], f)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
