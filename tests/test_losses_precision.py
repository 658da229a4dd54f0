"""The precision rule of the losses: the math runs in the inputs' dtype or float32, whichever is wider.

A loss module keeps what it precomputes (BKD's class weights, the logit-adjustment prior) at full
precision for float64 inputs, so the module agrees with its function to float64 rounding.
"""

import math

import pytest
import torch

from ltkd_hf.groups import ClassGroups
from ltkd_hf.losses import (
    bkd_loss,
    create_loss,
    dist_loss,
    dkd_loss,
    kd_loss,
    log_class_prior,
    logit_adjusted_cross_entropy,
    ltkd_loss,
)
from loss_references import bkd_reference

COUNTS = [500, 200, 80, 30, 12, 5]
LABELS = torch.tensor([0, 3, 5, 1, 2])


def _logits(seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (2.0 * torch.randn(5, len(COUNTS), generator=gen, dtype=torch.float64)).to(dtype)


# name: (the module's hyperparameters, its function on (student, teacher, labels))
MODULE_AND_FUNCTION = {
    "kd": ({"temperature": 3.0}, lambda zs, zt, y: kd_loss(zs, zt, temperature=3.0)),
    "dkd": ({"alpha": 1.5, "beta": 6.0}, lambda zs, zt, y: dkd_loss(zs, zt, y, alpha=1.5, beta=6.0)),
    "dist": ({"tau": 2.0}, lambda zs, zt, y: dist_loss(zs, zt, tau=2.0)),
    "bkd": ({"effective_number_beta": 0.999},
            lambda zs, zt, y: bkd_loss(zs, zt, COUNTS, effective_number_beta=0.999)),
    "ltkd": ({"num_groups": 3},
             lambda zs, zt, y: ltkd_loss(zs, zt, ClassGroups.from_counts(COUNTS, 3).index())),
}


@pytest.mark.parametrize("name", MODULE_AND_FUNCTION)
def test_module_matches_its_function_in_float64(name):
    """BKD's module used to hold its log-weights in float32: 7.6e-10 relative off its float64 function."""
    hyperparameters, function = MODULE_AND_FUNCTION[name]
    module = create_loss(name, class_counts=COUNTS, **hyperparameters)
    zs, zt = _logits(0).requires_grad_(), _logits(1)
    got = module(zs, zt, LABELS)
    want = function(zs, zt, LABELS)
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == torch.float64, key
        # float64 rounding: 1e-12 relative; the floor covers terms near 0 (the terms here are O(0.1..10))
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14)
    grad_got = torch.autograd.grad(got["loss"], zs)[0]
    grad_want = torch.autograd.grad(want["loss"], zs)[0]
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-12, atol=1e-14)  # gradients O(0.01..1), same floor


def test_bkd_module_in_float64_matches_the_loop_reference():
    module = create_loss("bkd", class_counts=COUNTS, temperature=2.0, effective_number_beta=0.999)
    zs, zt = _logits(2), _logits(3)
    reference = bkd_reference(zs, zt, COUNTS, temperature=2.0, effective_number_beta=0.999)
    # The loop reference sums in another order: a few float64 ulps of the O(1) loss, 1e-12 leaves room.
    torch.testing.assert_close(module(zs, zt)["loss"], reference, rtol=1e-12, atol=1e-13)


def test_bkd_module_in_float32_stays_float32():
    """Half and float32 inputs use the float32 weights on the module's device; the result is float32."""
    module = create_loss("bkd", class_counts=COUNTS)
    zs, zt = _logits(4), _logits(5)
    for dtype in (torch.float32, torch.bfloat16):
        got = module(zs.to(dtype), zt.to(dtype))["loss"]
        want = bkd_loss(zs.to(dtype), zt.to(dtype), COUNTS)["loss"]
        assert got.dtype == torch.float32
        # float32 weights in both (the function rounds its float64 weights to the compute dtype too)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert module.log_weights.dtype == torch.float32


def _adjusted_ce_loop(logits, labels, counts, tau):
    total = 0.0
    for z, y in zip(logits.tolist(), labels.tolist()):
        adjusted = [z_c + tau * math.log(n / sum(counts)) for z_c, n in zip(z, counts)]
        total += -(adjusted[y] - math.log(sum(math.exp(a) for a in adjusted)))
    return total / len(labels)


def test_logit_adjusted_cross_entropy_in_float64():
    logits = _logits(6)
    for tau in (1.0, 2.5):
        got = logit_adjusted_cross_entropy(logits, LABELS, log_class_prior(COUNTS, torch.float64), tau)
        assert got.dtype == torch.float64
        # Python's float64 loop vs torch's log-sum-exp: float64 rounding of an O(1) loss.
        assert got.item() == pytest.approx(_adjusted_ce_loop(logits, LABELS, COUNTS, tau), rel=1e-12, abs=1e-13)
    half = logit_adjusted_cross_entropy(logits.bfloat16(), LABELS, log_class_prior(COUNTS))
    assert half.dtype == torch.float32 and log_class_prior(COUNTS).dtype == torch.float32
    expected = _adjusted_ce_loop(logits.bfloat16().double(), LABELS, COUNTS, 1.0)
    assert half.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 math on bf16-exact logits
