"""The LTKD loss on each process's rows of one batch, for tests/test_losses_distributed.py (run in each process of
a torchrun launch, gloo on CPU, by two_process_jobs.py)."""

from pathlib import Path

import torch
import torch.distributed as dist

from ltkd_hf import ClassGroups
from ltkd_hf.losses import create_loss

ROWS_PER_PROCESS = 6
COUNTS = [400, 300, 200, 150, 90, 60, 40, 20, 10, 5, 3, 2]


def shared_batch() -> tuple[torch.Tensor, torch.Tensor, ClassGroups]:
    """The global batch: two halves whose teachers differ in head bias, so per-half group sums differ."""
    gen = torch.Generator().manual_seed(0)
    rows, classes = 2 * ROWS_PER_PROCESS, len(COUNTS)
    student = torch.randn(rows, classes, generator=gen, dtype=torch.float64)
    teacher = torch.randn(rows, classes, generator=gen, dtype=torch.float64)
    bias = torch.linspace(1, -1, classes, dtype=torch.float64)
    teacher[:ROWS_PER_PROCESS] += 4 * bias
    teacher[ROWS_PER_PROCESS:] -= bias
    return student, teacher, ClassGroups.from_counts(COUNTS, 3)


def losses_of_my_rows(out_dir: Path) -> None:
    """This process's rows of ``shared_batch``: the LTKD loss with and without the cross-process sync and its
    student-logit gradient, saved to ``<out_dir>/rank<r>.pt``."""
    rank = dist.get_rank()
    student, teacher, groups = shared_batch()
    rows = slice(rank * ROWS_PER_PROCESS, (rank + 1) * ROWS_PER_PROCESS)
    result = {}
    for sync in (True, False):
        loss_fn = create_loss("ltkd", groups=groups, temperature=2.0, sync_across_processes=sync)
        logits = student[rows].clone().requires_grad_()
        out = loss_fn(logits, teacher[rows])
        out["loss"].backward()
        result.update({f"{name}_sync{int(sync)}": value.detach() for name, value in out.items()})
        result[f"grad_sync{int(sync)}"] = logits.grad
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(result, out_dir / f"rank{rank}.pt")
