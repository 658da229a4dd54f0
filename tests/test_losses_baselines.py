"""KD baselines (DKD, DIST, BKD) against loop references of their papers' formulas, and their limits."""

import pytest
import torch

from ltkd_hf.losses import bkd_loss, dist_loss, dkd_loss, effective_number_weights, kd_loss
from loss_references import (
    bkd_reference,
    dist_reference,
    dkd_reference,
    effective_number_weights_reference,
)


def _logits(batch, num_classes, seed, scale=2.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, num_classes, generator=gen, dtype=torch.float64)).to(dtype)


LABELS = torch.tensor([0, 3, 6, 1, 6])


# -- DKD -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_dkd_matches_loop_reference_with_gradients(dtype, tol):
    zs = _logits(5, 7, 0, dtype=dtype).requires_grad_()
    zs_ref = zs.detach().double().requires_grad_()
    zt = _logits(5, 7, 1)
    out = dkd_loss(zs, zt.to(dtype), LABELS, alpha=1.5, beta=6.0, temperature=3.0)
    ref = dkd_reference(zs_ref, zt, LABELS, alpha=1.5, beta=6.0, temperature=3.0)
    for name, expected in zip(("loss", "tckd", "nckd"), ref):
        torch.testing.assert_close(out[name].double(), expected.detach(), rtol=tol, atol=tol)
    out["loss"].backward()
    ref[0].backward()
    torch.testing.assert_close(zs.grad.double(), zs_ref.grad, rtol=tol, atol=tol)


def test_dkd_gradcheck_and_limits():
    zs = _logits(4, 5, 0).requires_grad_()
    zt = _logits(4, 5, 1)
    labels = torch.tensor([0, 4, 2, 2])
    assert torch.autograd.gradcheck(lambda z: tuple(dkd_loss(z, zt, labels).values()), (zs,))
    same = dkd_loss(zt, zt.clone(), labels)
    assert all(abs(v.item()) < 1e-12 for v in same.values())
    # Teacher and student agreeing on everything but the target's share: only TCKD is non-zero.
    shifted = zt.clone()
    shifted[torch.arange(4), labels] += 1.0
    out = dkd_loss(shifted, zt, labels)
    assert out["tckd"] > 1e-4 and abs(out["nckd"].item()) < 1e-12


def test_dkd_finite_for_saturated_half_logits():
    zs = torch.full((2, 6), -80.0, dtype=torch.bfloat16)
    zs[:, 0] = 80.0
    zt = torch.full((2, 6), -80.0, dtype=torch.bfloat16)
    zt[:, 1] = 80.0
    labels = torch.tensor([0, 1])
    out = dkd_loss(zs, zt, labels)
    ref = dkd_reference(zs.double(), zt.double(), labels, alpha=1.0, beta=8.0, temperature=4.0)
    for name, expected in zip(("loss", "tckd", "nckd"), ref):
        assert out[name].dtype == torch.float32
        torch.testing.assert_close(out[name].double(), expected, rtol=1e-5, atol=1e-5)


def test_dkd_labels_are_checked():
    with pytest.raises(ValueError, match=r"labels must be a LongTensor of shape \(5,\)"):
        dkd_loss(_logits(5, 7, 0), _logits(5, 7, 1), LABELS[:4])
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(_logits(2, 1, 0), _logits(2, 1, 1), torch.tensor([0, 0]))


# -- DIST ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_dist_matches_loop_reference_with_gradients(dtype, tol):
    zs = _logits(6, 5, 0, dtype=dtype).requires_grad_()
    zs_ref = zs.detach().double().requires_grad_()
    zt = _logits(6, 5, 1)
    out = dist_loss(zs, zt.to(dtype), beta=2.0, gamma=0.5, tau=2.0)
    ref = dist_reference(zs_ref, zt, beta=2.0, gamma=0.5, tau=2.0)
    for name, expected in zip(("loss", "inter", "intra"), ref):
        torch.testing.assert_close(out[name].double(), expected.detach(), rtol=tol, atol=tol)
    out["loss"].backward()
    ref[0].backward()
    torch.testing.assert_close(zs.grad.double(), zs_ref.grad, rtol=tol, atol=tol)


def test_dist_limits():
    zt = _logits(8, 10, 1)
    same = dist_loss(zt, zt.clone())
    assert all(abs(v.item()) < 1e-6 for v in same.values())
    # Two classes: student and teacher predictions perfectly anti-correlated, so inter = 1 - (-1) = 2.
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = dist_loss(two * 5, two.flip(1) * 5)
    assert out["inter"].item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 samples"):
        dist_loss(zt[:1], zt[:1])


# -- BKD -------------------------------------------------------------------------------------------
COUNTS = [500, 200, 80, 30, 12, 5]


@pytest.mark.parametrize("beta", [0.9999, 0.99, 0.0])
def test_effective_number_weights_match_reference(beta):
    weights = effective_number_weights(COUNTS, beta)
    # The weights sum to C = 6, each O(0.1..1): float64 rounding, with a floor at that scale.
    assert weights.tolist() == pytest.approx(effective_number_weights_reference(COUNTS, beta), rel=1e-9, abs=1e-12)
    if beta > 0:
        assert all(a < b for a, b in zip(weights, weights[1:]))  # rarer class, larger weight


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_bkd_matches_loop_reference_with_gradients(dtype, tol):
    zs = _logits(5, 6, 0, dtype=dtype).requires_grad_()
    zs_ref = zs.detach().double().requires_grad_()
    zt = _logits(5, 6, 1)
    out = bkd_loss(zs, zt.to(dtype), COUNTS, temperature=2.0, effective_number_beta=0.999)
    ref = bkd_reference(zs_ref, zt, COUNTS, temperature=2.0, effective_number_beta=0.999)
    torch.testing.assert_close(out["loss"].double(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(out["kl"].double(), ref.detach() / 4, rtol=tol, atol=tol)
    out["loss"].backward()
    ref.backward()
    torch.testing.assert_close(zs.grad.double(), zs_ref.grad, rtol=tol, atol=tol)


def test_bkd_limits():
    zs, zt = _logits(5, 6, 0), _logits(5, 6, 1)
    # Balanced counts (or beta = 0) weigh every class alike: BKD is KD.
    for counts, beta in (([40] * 6, 0.9999), (COUNTS, 0.0)):
        torch.testing.assert_close(
            bkd_loss(zs, zt, counts, effective_number_beta=beta)["loss"], kd_loss(zs, zt, temperature=2.0)["loss"]
        )
        assert abs(bkd_loss(zt, zt.clone(), counts, effective_number_beta=beta)["loss"].item()) < 1e-12
    # Long-tailed counts move the target towards the tail: the teacher itself is no longer optimal.
    assert bkd_loss(zt, zt.clone(), COUNTS)["loss"] > 1e-3


@pytest.mark.parametrize(
    "counts,beta,match",
    [
        ([10, 0, 3], 0.9999, "counts >= 1"),
        ([10, 5], 1.0, r"effective_number_beta must be a number in \[0, 1\), got 1.0"),
        ([10, 5, 3, 1], 0.9999, "class_counts has 4 entries but the logits have 6 classes"),
    ],
)
def test_bkd_bad_input(counts, beta, match):
    num_classes = 6 if len(counts) == 4 else len(counts)
    with pytest.raises(ValueError, match=match):
        bkd_loss(_logits(2, num_classes, 0), _logits(2, num_classes, 1), counts, effective_number_beta=beta)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda a, b: kd_loss(a, b, temperature=0), "temperature must be a finite number > 0"),
        (lambda a, b: kd_loss(a, b[:, :3]), "student_logits has shape"),
        (lambda a, b: dist_loss(a, b, tau=-1.0), "tau must be a finite number > 0, got -1.0"),
        (lambda a, b: dist_loss(a, b, gamma=-1.0), "gamma must be a finite number >= 0"),
        (lambda a, b: dkd_loss(a, b, torch.tensor([0, 1]), beta=-8), "beta must be a finite number >= 0 .*got -8"),
    ],
)
def test_bad_hyperparameters(call, match):
    with pytest.raises(ValueError, match=match):
        call(_logits(2, 4, 0), _logits(2, 4, 1))
