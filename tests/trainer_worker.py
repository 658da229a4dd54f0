"""Runs a tiny DistillationTrainer in its own process (for the resume and torchrun tests).

python trainer_worker.py run OUT_DIR RESULT [--kill-at-save STEP] [--resume]
python trainer_worker.py first-step OUT_DIR RESULT --batch B --samples N
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from safetensors.torch import save_file  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from tiny_setup import SyntheticImages, make_config, make_student, make_trainer  # noqa: E402


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after the checkpoint of `step` is on disk: no clean shutdown at all."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "first-step"])
    parser.add_argument("output_dir")
    parser.add_argument("result")
    parser.add_argument("--kill-at-save", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--no-use-cpu", action="store_true", help="leave use_cpu off: accelerate sets up no DDP on CPU")
    opts = parser.parse_args()

    if opts.mode == "run":
        config = make_config(
            opts.output_dir,
            max_steps=6,
            save_strategy="steps",
            save_steps=2,
            per_device_train_batch_size=4,
            full_determinism=True,
            warmup_epochs=2.0,
        )
        callbacks = [KillAfterSave(opts.kill_at_save)] if opts.kill_at_save else []
        student = make_student(arch="test_resnet")  # BatchNorm in the student too: its buffers must resume
        trainer = make_trainer(config, model=student, train_dataset=SyntheticImages(24), callbacks=callbacks)
        trainer.train(resume_from_checkpoint=True if opts.resume else None)
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, opts.result)
    else:
        config = make_config(
            opts.output_dir,
            max_steps=1,
            learning_rate=0.0,
            per_device_train_batch_size=opts.batch,
            ddp_backend="gloo" if "LOCAL_RANK" in os.environ else None,
            use_cpu=not opts.no_use_cpu,
        )
        trainer = make_trainer(config, train_dataset=SyntheticImages(opts.samples))
        trainer.train()
        if trainer.is_world_process_zero():
            with open(opts.result, "w") as f:
                json.dump(trainer.state.log_history[0], f)
        accelerator = trainer.accelerator
        accelerator.wait_for_everyone()
        # Free the DDP model (its gloo reducer) while the process group is alive, then close the group: in the
        # other order the exit can abort ("terminate called without an active exception").
        del trainer
        gc.collect()
        accelerator.end_training()


if __name__ == "__main__":
    main()
