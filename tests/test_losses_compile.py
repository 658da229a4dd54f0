"""The logit losses under torch.compile, as the trainer runs them with torch_compile (the loss inside the compiled
model's forward): dynamo traces each loss and its backward whole, with no graph break (a break runs the loss eagerly
between two graphs, splitting the student's graph too), and the traced loss computes what the eager one does.

``aot_eager`` runs the traced forward and backward graphs as traced, in about a second; inductor's fused kernels
are timed by ``benchmarks/loss_speed.py --compile inductor``."""

import pytest
import torch
from torch._dynamo.utils import counters

from ltkd_hf.losses import available_losses, catkd_loss, create_loss

COUNTS = [300, 200, 120, 80, 50, 30, 20, 12, 8, 5]
LOGIT_LOSSES = [name for name in available_losses() if name not in ("catkd", "reviewkd")]

CASES = [pytest.param(name, {}, torch.float32, False, id=name) for name in LOGIT_LOSSES] + [
    pytest.param("ltkd", dict(rebalance=False, reweight=False), torch.float32, False, id="ltkd-ablation"),
    pytest.param("ltkd", dict(reweight=False, num_groups=4), torch.float64, False, id="ltkd-float64-K4"),
    pytest.param("ltkd", dict(num_groups=10), torch.float32, False, id="ltkd-K=C"),  # KD to the rebalanced teacher
    pytest.param("ltkd", {}, torch.bfloat16, True, id="ltkd-bf16-window"),  # a window's group sums passed in
]


def test_every_logit_loss_is_covered():
    assert set(LOGIT_LOSSES) >= {"bkd", "ce", "dist", "dkd", "kd", "ltkd"}


@pytest.mark.parametrize("name,hyper,dtype,window", CASES)
def test_loss_compiles_whole_and_matches_eager(name, hyper, dtype, window):
    loss_fn = create_loss(name, class_counts=COUNTS, **hyper)
    gen = torch.Generator().manual_seed(0)
    zs = (3 * torch.randn(16, 10, generator=gen)).to(dtype)
    zt = (3 * torch.randn(16, 10, generator=gen) + torch.linspace(2, -2, 10)).to(dtype)
    labels = torch.randint(0, 10, (16,), generator=gen)
    extra = {"batch_statistics": loss_fn.batch_statistics(zt)} if window else {}

    def terms(student_logits):
        return loss_fn(student_logits, zt, labels, **extra)

    torch._dynamo.reset()
    explained = torch._dynamo.explain(terms)(zs.clone().requires_grad_())
    assert explained.graph_break_count == 0, [reason.reason.splitlines()[0] for reason in explained.break_reasons]

    torch._dynamo.reset()
    counters.clear()
    eager_in, compiled_in = zs.clone().requires_grad_(), zs.clone().requires_grad_()
    eager, compiled = terms(eager_in), torch.compile(terms, backend="aot_eager", fullgraph=True)(compiled_in)
    assert compiled["loss"].requires_grad == eager["loss"].requires_grad  # False for CE's constant 0 only
    if eager["loss"].requires_grad:
        eager["loss"].backward()
        compiled["loss"].backward()
    assert not counters["graph_break"]
    assert set(compiled) == set(eager)
    for key in eager:
        # the same ops on the same inputs: float noise at most, of terms of O(1-10) logits (eps 1.2e-7, bf16 in f32)
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6, msg=key)
    if eager["loss"].requires_grad:
        torch.testing.assert_close(compiled_in.grad, eager_in.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize_cams", [False, True])
def test_catkd_compiles_and_matches_eager(normalize_cams):
    """CAT-KD's CAMs through torch.compile's forward and backward (an einsum's permuted output made AOTAutograd's
    MSE backward fail with "view size is not compatible", so the trainer's torch_compile crashed on CAT-KD)."""
    gen = torch.Generator().manual_seed(0)
    student_map, teacher_map = torch.randn(4, 16, 8, 8, generator=gen), torch.randn(4, 32, 4, 4, generator=gen)
    student_weight, teacher_weight = torch.randn(10, 16, generator=gen), torch.randn(10, 32, generator=gen)

    def terms(fmap, weight):
        return catkd_loss(fmap, weight, teacher_map, teacher_weight, cam_resolution=2, normalize_cams=normalize_cams)

    torch._dynamo.reset()
    eager_in = (student_map.clone().requires_grad_(), student_weight.clone().requires_grad_())
    compiled_in = (student_map.clone().requires_grad_(), student_weight.clone().requires_grad_())
    eager, compiled = terms(*eager_in), torch.compile(terms, backend="aot_eager", fullgraph=True)(*compiled_in)
    eager["loss"].backward()
    compiled["loss"].backward()
    for key in eager:  # MSEs of O(1-10) CAMs, float32
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6, msg=key)
    for a, b in zip(compiled_in, eager_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
