"""The loss registry: names, hyperparameters, data-derived inputs, and the one calling convention."""

import pytest
import torch

from ltkd_hf import ClassGroups
from ltkd_hf.losses import LOSSES, DistillationLoss, available_losses, create_loss, register_loss
from loss_references import bkd_reference, dist_reference, dkd_reference, kd_reference, ltkd_reference

COUNTS = [300, 200, 120, 80, 50, 30, 20, 12, 8, 5]


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    zs = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    zt = torch.randn(6, 10, generator=gen, dtype=torch.float64) + torch.linspace(2, -2, 10, dtype=torch.float64)
    return zs, zt, torch.tensor([0, 9, 4, 4, 1, 7])


def test_registered_names():
    assert set(available_losses()) >= {"ltkd", "kd", "dkd", "dist", "bkd", "ce"}
    assert available_losses() == sorted(available_losses())


@pytest.mark.parametrize(
    "name,hyper,reference",
    [
        ("kd", dict(temperature=3.0), lambda zs, zt, y: kd_reference(zs, zt, temperature=3.0)),
        ("dkd", dict(alpha=2.0, beta=6.0), lambda zs, zt, y: dkd_reference(zs, zt, y, alpha=2.0, beta=6.0, temperature=4.0)[0]),
        ("dist", dict(tau=2.0), lambda zs, zt, y: dist_reference(zs, zt, beta=1.0, gamma=1.0, tau=2.0)[0]),
        ("bkd", dict(), lambda zs, zt, y: bkd_reference(zs, zt, COUNTS, temperature=2.0, effective_number_beta=0.9999)),
        ("ltkd", dict(num_groups=4, beta=8.0),
         lambda zs, zt, y: ltkd_reference(zs, zt, ClassGroups.from_counts(COUNTS, 4).class_to_group, temperature=4.0,
                                          alpha=6.0, beta=8.0, rebalance=True, reweight=True)[0]),
    ],
)
def test_created_losses_compute_their_formula(name, hyper, reference):
    loss_fn = create_loss(name, class_counts=COUNTS, **hyper)
    assert isinstance(loss_fn, DistillationLoss) and list(loss_fn.parameters()) == []
    zs, zt, labels = _batch()
    out = loss_fn(zs, zt, labels)
    # float64 logits, float64 math (BKD's weights too): O(1-10) terms agree to float64 noise
    torch.testing.assert_close(out["loss"], reference(zs, zt, labels), rtol=1e-12, atol=1e-12)
    assert all(v.dim() == 0 for v in out.values())


def test_ce_adds_nothing():
    zs, zt, labels = _batch()
    out = create_loss("ce", groups=ClassGroups.from_counts(COUNTS), class_counts=COUNTS)(zs.float(), zt.float(), labels)
    assert set(out) == {"loss"} and out["loss"].dtype == torch.float32 and out["loss"].item() == 0.0


def test_ltkd_from_groups_and_its_description():
    groups = ClassGroups.from_counts(COUNTS, 3)
    loss_fn = create_loss("ltkd", groups=groups, class_counts=COUNTS)
    assert loss_fn.describe() == "LTKD: T^2*(6.0*KL(rebalanced b_t||b_s) + 6.0*sum_G KL(q_t,G||q_s,G)), T=4.0, K=3"
    assert "K=3" in repr(loss_fn)
    ablation = create_loss("ltkd", groups=groups, rebalance=False, reweight=False, alpha=1.0, beta=1.0)
    assert ablation.describe() == "LTKD: T^2*(1.0*KL(b_t||b_s) + 1.0*sum_G b_t,G*KL(q_t,G||q_s,G)), T=4.0, K=3"
    zs, zt, _ = _batch()
    torch.testing.assert_close(ablation(zs, zt)["loss"], kd_reference(zs, zt, temperature=4.0))


def test_ltkd_says_when_a_group_of_one_class_has_no_within_group_term():
    """A group of one class has within-group KL 0 (its q is [1] for both models); when every group is one class,
    beta and reweight change nothing, and the objective line (log and card) says so."""
    zs, zt, _ = _batch()
    one_each = ClassGroups.from_counts(COUNTS, 10)
    losses = [create_loss("ltkd", groups=one_each, beta=beta, reweight=reweight)
              for beta in (0.0, 6.0) for reweight in (True, False)]
    outs = [loss_fn(zs, zt) for loss_fn in losses]
    assert all(out["within_group"].item() == 0.0 for out in outs)
    assert all(torch.equal(out["loss"], outs[0]["loss"]) for out in outs)
    assert losses[1].describe().endswith(
        "K=10; every group holds one class, so the within-group term is 0 and beta and reweight change nothing")

    four = [9, 5, 3, 1]
    groups = ClassGroups.from_counts(four, 3)
    assert groups.sizes == [1, 2, 1]
    loss_fn = create_loss("ltkd", groups=groups)
    assert loss_fn.describe().endswith("K=3; groups ['head', 'tail'] hold one class each, so their within-group KL is 0")
    # the within-group term is the medium group's KL alone (weight 1 with reweight, the default)
    z_s, z_t = zs[:, :4], zt[:, :4]
    medium = groups.classes_of("medium")
    q_s = torch.log_softmax(z_s[:, medium] / 4.0, dim=1)
    q_t = torch.log_softmax(z_t[:, medium] / 4.0, dim=1)
    within = torch.nn.functional.kl_div(q_s, q_t, reduction="batchmean", log_target=True)
    torch.testing.assert_close(loss_fn(z_s, z_t)["within_group"], within, rtol=1e-12, atol=1e-12)
    assert create_loss("ltkd", class_counts=COUNTS).describe().endswith("K=3")


def test_none_means_default():
    loss_fn = create_loss("kd", temperature=None, alpha=None)  # alpha is not KD's, but None is "not set"
    assert loss_fn.temperature == 4.0
    assert create_loss("dkd", alpha=None, beta=6.0).describe().startswith("DKD: 1.0*")


def test_errors_say_what_to_pass():
    with pytest.raises(ValueError, match=r"unknown loss 'hinton'; registered losses: \['bkd', 'catkd', 'ce', 'dist', 'dkd', 'kd', 'ltkd', 'reviewkd'"):
        create_loss("hinton")
    with pytest.raises(ValueError, match=r"loss 'kd' does not take the hyperparameter\(s\) \['alpha'\]; it accepts \['temperature'\]"):
        create_loss("kd", alpha=6.0)
    with pytest.raises(ValueError, match="LTKD needs the class groups: pass groups="):
        create_loss("ltkd")
    with pytest.raises(ValueError, match="BKD needs the per-class training counts: pass class_counts="):
        create_loss("bkd")
    with pytest.raises(ValueError, match="num_groups=5 disagrees with the 3 groups"):
        create_loss("ltkd", groups=ClassGroups.from_counts(COUNTS), num_groups=5)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        create_loss("ltkd", class_counts=COUNTS, temperature=0)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        create_loss("dkd", alpha=-1.0)
    zs, zt, _ = _batch()
    with pytest.raises(ValueError, match="needs the ground-truth labels"):
        create_loss("dkd")(zs, zt)
    with pytest.raises(ValueError, match="the logits have 9 classes but the LTKD groups cover 10"):
        create_loss("ltkd", class_counts=COUNTS)(zs[:, :9], zt[:, :9])
    with pytest.raises(ValueError, match="the logits have 9 classes but BKD was built from 10 class counts"):
        create_loss("bkd", class_counts=COUNTS)(zs[:, :9], zt[:, :9])


def test_a_new_loss_plugs_in_with_trainable_parameters():
    @register_loss("toy_feature")
    class ToyFeatureLoss(DistillationLoss):
        requires_features = True

        def __init__(self, *, weight: float = 2.0, channels: int = 3) -> None:
            super().__init__()
            self.weight = weight
            self.adapter = torch.nn.Linear(channels, channels, bias=False)

        def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None):
            gap = self.adapter(student_features[0]) - teacher_features[0]
            return {"loss": self.weight * gap.pow(2).mean()}

        def describe(self) -> str:
            return f"toy: {self.weight}*MSE"

    try:
        loss_fn = create_loss("toy_feature", groups=None, class_counts=COUNTS, weight=0.5)
        assert "toy_feature" in available_losses() and loss_fn.requires_features
        params = list(loss_fn.parameters())
        assert [p.shape for p in params] == [torch.Size([3, 3])]
        features = torch.ones(2, 3)
        out = loss_fn(None, None, student_features=[features], teacher_features=[torch.zeros(2, 3)])
        out["loss"].backward()
        assert params[0].grad is not None
        with pytest.raises(ValueError, match="already registered"):
            register_loss("kd")(ToyFeatureLoss)
    finally:
        LOSSES.pop("toy_feature", None)


def test_ltkd_module_follows_the_logits_device_and_dtype():
    loss_fn = create_loss("ltkd", class_counts=COUNTS, num_groups=2).to(torch.float64)
    assert loss_fn.class_to_group.dtype == torch.long  # .to(dtype) must leave the group ids alone
    assert "class_to_group" not in loss_fn.state_dict()  # derived from the groups, never checkpointed
    zs, zt, _ = _batch()
    out = loss_fn(zs.bfloat16(), zt.bfloat16())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
