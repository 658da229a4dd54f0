"""LTKD against the paper's formulas (plain-loop references), its KD limit, and its numerics."""

import itertools

import pytest
import torch

from ltkd_hf.losses import create_loss, kd_loss, ltkd_loss, rebalance_group_mass, rebalance_log_scales
from loss_references import kd_reference, ltkd_reference, random_groups

# Tolerances: a float32 term is built from log-sum-exps of O(1-10) logits, so a float64 reference or another
# summation order moves it by a few eps (1.2e-7) of those magnitudes however small the term: absolute floors of
# 1e-7..1e-6 on KL terms, about T^2 = 16 times that on a loss; float64 values of O(1) agree to ~1e-12 or better.


def _logits(batch, num_classes, seed, scale=3.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, num_classes, generator=gen, dtype=torch.float64)).to(dtype)


def _biased_teacher(batch, num_classes, seed):
    """Teacher logits favouring the low class ids, as a head-biased teacher does."""
    return _logits(batch, num_classes, seed) + torch.linspace(3, -3, num_classes)


@pytest.mark.parametrize("num_classes", [10, 100, 1000])
@pytest.mark.parametrize("groups", ["1", "3", "7", "C"])
def test_equals_kd_with_both_switches_off(num_classes, groups):
    num_groups = num_classes if groups == "C" else int(groups)
    class_to_group = random_groups(num_classes, num_groups, torch.Generator().manual_seed(num_groups))
    zs, zt = _logits(64, num_classes, 0), _logits(64, num_classes, 1)
    out = ltkd_loss(zs, zt, class_to_group, alpha=1.0, beta=1.0, rebalance=False, reweight=False)
    kd = kd_loss(zs, zt)
    torch.testing.assert_close(out["loss"], kd["loss"], rtol=1e-5, atol=1e-5)
    # The KL decomposition itself, term by term.
    torch.testing.assert_close(out["cross_group"] + out["within_group"], kd["kl"], rtol=1e-5, atol=1e-6)


def test_kd_loss_matches_loop_reference():
    zs, zt = _logits(6, 9, 0, dtype=torch.float64), _logits(6, 9, 1, dtype=torch.float64)
    torch.testing.assert_close(kd_loss(zs, zt, temperature=3.0)["loss"], kd_reference(zs, zt, temperature=3.0))


CONFIGS = list(itertools.product([True, False], [True, False]))


@pytest.mark.parametrize("rebalance,reweight", CONFIGS)
@pytest.mark.parametrize("num_groups", [1, 3, 12])
def test_terms_and_gradients_match_loop_reference(rebalance, reweight, num_groups):
    class_to_group = random_groups(12, num_groups, torch.Generator().manual_seed(3))
    zt = _biased_teacher(5, 12, 1).double()
    kwargs = dict(temperature=3.0, alpha=2.0, beta=0.7, rebalance=rebalance, reweight=reweight)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        zs = _logits(5, 12, 0, dtype=dtype).requires_grad_()
        zs_ref = zs.detach().double().requires_grad_()
        out = ltkd_loss(zs, zt.to(dtype), class_to_group, **kwargs)
        ref = ltkd_reference(zs_ref, zt, class_to_group.tolist(), **kwargs)
        for name, expected in zip(("loss", "cross_group", "within_group"), ref):
            assert out[name].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            torch.testing.assert_close(out[name].double(), expected.detach(), rtol=tol, atol=tol)
        # Backpropagate a mix of the three outputs so every gradient path is used.
        (out["loss"] + 0.3 * out["cross_group"] - 2.0 * out["within_group"]).backward()
        (ref[0] + 0.3 * ref[1] - 2.0 * ref[2]).backward()
        torch.testing.assert_close(zs.grad.double(), zs_ref.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("rebalance,reweight", CONFIGS)
@pytest.mark.parametrize("num_groups,temperature", [(1, 1.0), (3, 4.0), (4, 0.5), (6, 2.0)])
def test_gradcheck_float64(rebalance, reweight, num_groups, temperature):
    class_to_group = random_groups(6, num_groups, torch.Generator().manual_seed(num_groups))
    zs = _logits(4, 6, 0, dtype=torch.float64).requires_grad_()
    zt = _biased_teacher(4, 6, 1).double()

    def terms(z):
        out = ltkd_loss(z, zt, class_to_group, temperature=temperature, alpha=1.5, beta=0.5,
                        rebalance=rebalance, reweight=reweight)
        return out["loss"], out["cross_group"], out["within_group"]

    assert torch.autograd.gradcheck(terms, (zs,))


def test_no_gradient_reaches_the_teacher():
    zs = _logits(4, 6, 0).requires_grad_()
    zt = _logits(4, 6, 1).requires_grad_()
    ltkd_loss(zs, zt, torch.tensor([0, 0, 1, 1, 2, 2]))["loss"].backward()
    assert zt.grad is None and zs.grad is not None


# -- rebalancing -----------------------------------------------------------------------------------
def _teacher_mass(batch, num_groups, seed):
    return torch.softmax(_logits(batch, num_groups, seed, dtype=torch.float64) + torch.linspace(2, -2, num_groups), 1)


def test_rescaled_group_sums_are_equal():
    mass = _teacher_mass(16, 4, 0)
    sums = mass.sum(0)
    scales = rebalance_log_scales(sums).exp()
    rescaled = [sum(float(scales[g] * mass[b, g]) for b in range(16)) for g in range(4)]
    mean = sum(float(s) for s in sums) / 4
    assert rescaled == pytest.approx([mean] * 4, rel=1e-12, abs=1e-12)
    assert max(rescaled) / min(rescaled) < 1 + 1e-12 < float(sums.max() / sums.min())


def test_rebalanced_mass_follows_the_formula():
    mass = _teacher_mass(8, 3, 1)
    sums = mass.sum(0).tolist()
    scales = [sum(sums) / 3 / s for s in sums]
    expected = torch.tensor(
        [[scales[g] * float(mass[b, g]) / sum(scales[k] * float(mass[b, k]) for k in range(3)) for g in range(3)]
         for b in range(8)], dtype=torch.float64,
    )
    torch.testing.assert_close(rebalance_group_mass(mass), expected)
    # The tail gains mass from the head on every sample.
    out = rebalance_group_mass(mass)
    assert (out[:, 2] > mass[:, 2]).all() and (out[:, 0] < mass[:, 0]).all()


@pytest.mark.parametrize("factor", [1e-3, 0.5, 7.0, 1e4])
def test_scaling_all_group_sums_changes_nothing(factor):
    mass = _teacher_mass(8, 5, 2)
    sums = mass.sum(0)
    torch.testing.assert_close(rebalance_group_mass(mass, sums * factor), rebalance_group_mass(mass, sums))


def test_batch_with_equal_sums_is_unchanged():
    row = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    mass = torch.stack([row.roll(k) for k in range(3)] * 2)  # every group sums to 2.0
    torch.testing.assert_close(rebalance_group_mass(mass), mass, rtol=1e-15, atol=1e-15)


def test_identical_rows_become_uniform():
    mass = _teacher_mass(1, 4, 3).repeat(5, 1)
    torch.testing.assert_close(rebalance_group_mass(mass), torch.full((5, 4), 0.25, dtype=torch.float64))


def test_rebalancing_is_what_separates_ltkd_from_its_ablation():
    zs, zt = _logits(16, 10, 0), _biased_teacher(16, 10, 1)
    class_to_group = torch.arange(10) // 4
    on = ltkd_loss(zs, zt, class_to_group, rebalance=True)
    off = ltkd_loss(zs, zt, class_to_group, rebalance=False)
    assert not torch.isclose(on["cross_group"], off["cross_group"])
    assert on["within_group"] == off["within_group"]


# -- limits and invariances ------------------------------------------------------------------------
@pytest.mark.parametrize("rebalance", [True, False])
def test_one_class_per_group_has_exactly_zero_within_term(rebalance):
    num_classes = 50
    class_to_group = torch.randperm(num_classes, generator=torch.Generator().manual_seed(0))
    zs, zt = _logits(8, num_classes, 0), _biased_teacher(8, num_classes, 1)
    for reweight in (True, False):
        out = ltkd_loss(zs, zt, class_to_group, rebalance=rebalance, reweight=reweight)
        assert out["within_group"].item() == 0.0
    # The cross term is then KL(rebalanced p_t || p_s) over the classes.
    ref = ltkd_reference(zs.double(), zt.double(), class_to_group.tolist(), temperature=4.0, alpha=6.0,
                         beta=6.0, rebalance=rebalance, reweight=True)
    torch.testing.assert_close(out["cross_group"].double(), ref[1], rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(out["loss"].double(), ref[0], rtol=2e-5, atol=1e-6)


def test_identical_logits_give_zero_without_rebalancing():
    z = _logits(8, 20, 0)
    out = ltkd_loss(z, z.clone(), torch.arange(20) % 3, rebalance=False)
    for name in ("loss", "cross_group", "within_group"):
        assert abs(out[name].item()) < 1e-6


@pytest.mark.parametrize("rebalance,reweight", CONFIGS)
def test_permuting_classes_with_the_group_map_changes_nothing(rebalance, reweight):
    gen = torch.Generator().manual_seed(5)
    class_to_group = random_groups(30, 4, gen)
    perm = torch.randperm(30, generator=gen)
    zs, zt = _logits(16, 30, 0), _biased_teacher(16, 30, 1)
    kwargs = dict(rebalance=rebalance, reweight=reweight)
    out = ltkd_loss(zs, zt, class_to_group, **kwargs)
    permuted = ltkd_loss(zs[:, perm], zt[:, perm], class_to_group[perm], **kwargs)
    # Relabelling the groups themselves is also a no-op.
    relabel = torch.tensor([2, 0, 3, 1])[class_to_group]
    relabelled = ltkd_loss(zs, zt, relabel, **kwargs)
    for name in out:
        torch.testing.assert_close(permuted[name], out[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(relabelled[name], out[name], rtol=1e-5, atol=1e-7)


# -- mixed precision -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", [4.0, 1.0])
def test_half_precision_logits_up_to_80(dtype, temperature):
    gen = torch.Generator().manual_seed(0)
    zs = ((torch.rand(6, 24, generator=gen) * 160 - 80)).to(dtype).requires_grad_()
    zt = ((torch.rand(6, 24, generator=gen) * 160 - 80)).to(dtype)
    zs[0, :3].data.fill_(80.0)  # saturated rows are where naive implementations overflow
    zt[1, :].fill_(-80.0)
    zt[1, 5] = 80.0
    class_to_group = torch.arange(24) % 3
    out = ltkd_loss(zs, zt, class_to_group, temperature=temperature)
    ref = ltkd_reference(zs.detach().double(), zt.double(), class_to_group.tolist(), temperature=temperature,
                         alpha=6.0, beta=6.0, rebalance=True, reweight=True)
    for name, expected in zip(("loss", "cross_group", "within_group"), ref):
        assert out[name].dtype == torch.float32 and torch.isfinite(out[name])
        torch.testing.assert_close(out[name].double(), expected, rtol=1e-4, atol=1e-5)
    out["loss"].backward()
    assert zs.grad.dtype == dtype and torch.isfinite(zs.grad.float()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["three groups", "one class per group"])
def test_a_group_with_almost_no_teacher_mass_keeps_its_rebalancing(dtype, case):
    """S_G summed float32 probabilities: a group whose mass over the batch is below e^-87 (a confident teacher at
    T = 1) summed to 0, so its rebalanced target collapsed instead of being boosted: the loss was 2.43 (three groups)
    and 1.34 (K = C) where the exact one is 0."""
    from ltkd_hf.losses import LTKDLoss

    if case == "three groups":
        zs, zt, class_to_group = torch.zeros(4, 9), torch.zeros(4, 9), torch.arange(9) // 3
        zt[:, 6:] = -160.0
    else:
        zs, zt, class_to_group = torch.zeros(4, 5), torch.full((4, 5), 80.0), torch.arange(5)
        zt[:, 0] = -80.0
    ref = ltkd_reference(zs.double(), zt.double(), class_to_group.tolist(), temperature=1.0, alpha=6.0, beta=6.0,
                         rebalance=True, reweight=True)
    out = ltkd_loss(zs.to(dtype), zt.to(dtype), class_to_group, temperature=1.0)
    # the trainer's path: the window's statistics from batch_statistics, passed back in
    loss_fn = LTKDLoss(class_counts=[10] * zs.shape[1], num_groups=int(class_to_group.max()) + 1, temperature=1.0)
    loss_fn.class_to_group = class_to_group
    windowed = loss_fn(zs.to(dtype), zt.to(dtype), batch_statistics=loss_fn.batch_statistics(zt.to(dtype)))
    # float32 rounding of logits of 160 (eps * 160 = 2e-5 per term; the within-group KL's cancellation, times
    # beta = 6), far below the 0.4 (cross) and 1.3-2.4 (loss) of the collapsed target
    scale = torch.finfo(torch.float32).eps * float(zt.abs().max())
    for terms in (out, windowed):
        for name, expected, atol in zip(("loss", "cross_group"), ref, (60 * scale, 10 * scale)):
            torch.testing.assert_close(terms[name].double(), expected, rtol=1e-4, atol=atol)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change,match",
    [
        (dict(teacher_logits=torch.zeros(4, 7)), r"student_logits has shape \(4, 6\) but teacher_logits has shape \(4, 7\)"),
        (dict(student_logits=torch.zeros(6)), r"student_logits must be .* got \(6,\)"),
        (dict(class_to_group=torch.tensor([0, 1, 2, 0, 1])), "class_to_group has 5 entries but the logits have 6"),
        (dict(class_to_group=torch.tensor([0, 1, 2, 0, 1, -1])), r"group ids in -1\.\.2"),
        (dict(class_to_group=torch.tensor([0, 1, 2, 0, 1, 3]), num_groups=3), r"ids in 0\.\.3, expected ids in 0\.\.2"),
        (dict(class_to_group=torch.tensor([0, 1, 3, 0, 1, 3])), r"groups \[2\] without any class"),
        (dict(class_to_group=torch.tensor([0.0, 1, 2, 0, 1, 2])), "class_to_group must be a 1-D LongTensor"),
        (dict(temperature=0.0), "temperature must be a finite number > 0, got 0.0"),
        (dict(temperature=-2), "temperature must be a finite number > 0, got -2"),
        (dict(alpha=-1.0), "alpha must be a finite number >= 0 .*got -1.0"),
        (dict(beta=float("nan")), "beta must be a finite number >= 0 .*got nan"),
        # bool("false") is True: a string switched the option on, whatever it said
        (dict(rebalance="false"), "rebalance must be True or False, got 'false'"),
        (dict(reweight=0), "reweight must be True or False, got 0"),
        (dict(sync_across_processes="no"), "sync_across_processes must be True or False, got 'no'"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(change, match):
    kwargs = dict(student_logits=torch.zeros(4, 6), teacher_logits=torch.zeros(4, 6),
                  class_to_group=torch.tensor([0, 1, 2, 0, 1, 2]))
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        ltkd_loss(**kwargs)
    options = {k: v for k, v in change.items() if k in ("rebalance", "reweight", "sync_across_processes")}
    if options:  # the loss object (create_loss, DistillationConfig's path) refuses them too
        with pytest.raises(ValueError, match=match):
            create_loss("ltkd", class_counts=[9, 5, 3, 2, 1], **options)


# -- accelerator -----------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-3)])
@pytest.mark.parametrize("num_groups", [3, 24])
def test_cuda_matches_loop_reference(dtype, tol, num_groups):
    from ltkd_hf import ClassGroups
    from ltkd_hf.losses import create_loss

    gen = torch.Generator().manual_seed(0)
    groups = ClassGroups(tuple(random_groups(24, num_groups, gen).tolist()), tuple(str(g) for g in range(num_groups)))
    zs_cpu = (torch.rand(8, 24, generator=gen) * 160 - 80).to(dtype)
    zt_cpu = (torch.rand(8, 24, generator=gen) * 160 - 80).to(dtype)
    zs = zs_cpu.cuda().requires_grad_()
    out = create_loss("ltkd", groups=groups, temperature=4.0).cuda()(zs, zt_cpu.cuda())
    zs_ref = zs_cpu.double().requires_grad_()
    ref = ltkd_reference(zs_ref, zt_cpu.double(), list(groups.class_to_group), temperature=4.0, alpha=6.0,
                         beta=6.0, rebalance=True, reweight=True)
    for name, expected in zip(("loss", "cross_group", "within_group"), ref):
        assert out[name].device.type == "cuda" and out[name].dtype == torch.float32
        torch.testing.assert_close(out[name].double().cpu(), expected.detach(), rtol=1e-4, atol=1e-5)
    out["loss"].backward()
    ref[0].backward()
    assert zs.grad.dtype == dtype
    torch.testing.assert_close(zs.grad.double().cpu(), zs_ref.grad, rtol=tol, atol=tol * zs_ref.grad.abs().max().item())
