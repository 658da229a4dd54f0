"""Every two-process check of the trainer and the losses in one torchrun launch (gloo, CPU): a launch spends about
15 s of two processes importing torch, timm and transformers before it trains anything, once instead of five times.

python -m torch.distributed.run --nproc_per_node 2 two_process_jobs.py ROOT VIT_CHECKPOINT

conftest.py's ``two_processes`` fixture launches it (once per pytest run); each job writes under ROOT, and the
tests that read its files are beside their single-process counterparts:

- ROOT/teacher_cache/: test_teacher_cache_trainer.py (first: it counts one log line of the launch's output)
- ROOT/losses/: test_losses_distributed.py
- ROOT/default.json, ROOT/vit.json (+ .safetensors): test_trainer.py's first steps of torchrun 2 x 8, the default
  student and the ViT started from VIT_CHECKPOINT
- ROOT/augmentation.{device,loader}.rank<i>.pt: test_trainer.py's first batches of each process
- ROOT/reviewkd.json (+ .rank<i>.safetensors): test_trainer_features.py's ReviewKD step of torchrun 2 x 4
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import PartialState

from ltkd_hf.cli.stages import close_processes

from augmentation_worker import record_first_batch
from dist_loss_worker import losses_of_my_rows
from test_teacher_cache_trainer import two_process_worker
from trainer_worker import first_step, reviewkd_first_step


def main(root: Path, vit_checkpoint: str) -> None:
    PartialState()  # the process group, which every job's trainer then shares
    two_process_worker(root / "teacher_cache", root / "teacher_cache" / "result")
    losses_of_my_rows(root / "losses")
    for name, init in (("default", None), ("vit", vit_checkpoint)):
        first_step(root / name, root / f"{name}.json", batch=8, lr=0.5, student_init=init)
    for path in ("device", "loader"):
        record_first_batch(f"{root}/augmentation/{path}", f"{root}/augmentation.{path}", path)
    reviewkd_first_step(root / "reviewkd", root / "reviewkd.json", batch=4, samples=8, lr=0.5)
    close_processes()  # the trainers freed first: exiting with a gloo reducer alive aborted ~1 run in 6


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
