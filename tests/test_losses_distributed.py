"""LTKD across processes: 2 processes x b samples behave like 1 process x 2b samples (torchrun, gloo)."""

import pytest
import torch

from ltkd_hf.losses import create_loss
from dist_loss_worker import ROWS_PER_PROCESS, shared_batch


@pytest.fixture(scope="module")
def two_process_results(two_processes):
    """Each process's losses and gradient on its rows (dist_loss_worker.py, in two_process_jobs.py's launch)."""
    return [torch.load(two_processes.root / "losses" / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def _one_process():
    student, teacher, groups = shared_batch()
    logits = student.clone().requires_grad_()
    out = create_loss("ltkd", groups=groups, temperature=2.0)(logits, teacher)
    out["loss"].backward()
    return out, logits.grad


def test_two_processes_equal_one_process_with_the_whole_batch(two_process_results):
    single, single_grad = _one_process()
    # Each process reports the mean over its own b rows (as DDP training does), so what a user sees --
    # the average over processes -- is the single-process mean over 2b rows.
    for name in ("loss", "cross_group", "within_group"):
        average = sum(result[f"{name}_sync1"] for result in two_process_results) / 2
        torch.testing.assert_close(average, single[name].detach(), rtol=1e-12, atol=1e-14)
    # A process's gradient is d(mean over b rows) = 2 x d(mean over 2b rows) on its rows; DDP's
    # gradient averaging over the 2 processes then gives the single-process gradient exactly.
    for rank, result in enumerate(two_process_results):
        rows = slice(rank * ROWS_PER_PROCESS, (rank + 1) * ROWS_PER_PROCESS)
        torch.testing.assert_close(result["grad_sync1"], 2 * single_grad[rows], rtol=1e-12, atol=1e-14)


def test_without_sync_each_process_rebalances_its_own_half(two_process_results):
    single, _ = _one_process()
    average = sum(result["loss_sync0"] for result in two_process_results) / 2
    assert not torch.isclose(average, single["loss"].detach(), rtol=1e-3)
    # Only the rebalanced cross-group term depends on the batch; the within-group term is per sample.
    for result in two_process_results:
        assert result["within_group_sync0"] == result["within_group_sync1"]
    student, teacher, groups = shared_batch()
    first_half = create_loss("ltkd", groups=groups, temperature=2.0)(
        student[:ROWS_PER_PROCESS], teacher[:ROWS_PER_PROCESS]
    )
    torch.testing.assert_close(two_process_results[0]["loss_sync0"], first_half["loss"], rtol=1e-12, atol=1e-14)
