"""The CIFAR models' shared initialisation (``_cifar.init_weights``) against the loops each model used to own.

Each reference loop below is the model file's own loop before they were merged, written out here; a model
built with its initialisation switched off, then run through its loop from the same random state, must come
out bit for bit as the model built normally.
"""

import pytest
import timm
import torch
from torch import nn

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf.models import cifar_mobilenet, cifar_resnet, cifar_vgg, cifar_wrn
from ltkd_hf.models._cifar import init_weights


def resnet_loop(model):
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def wrn_loop(model):
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def vgg_loop(model):
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


def mobilenet_loop(model):
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


# name: (the model's module, its former loop)
FAMILIES = {
    "cifar_resnet8x4": (cifar_resnet, resnet_loop),
    "cifar_resnet50": (cifar_resnet, resnet_loop),
    "cifar_wrn_40_1": (cifar_wrn, wrn_loop),
    "cifar_vgg8": (cifar_vgg, vgg_loop),
    "cifar_mobilenet_v2": (cifar_mobilenet, mobilenet_loop),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_init_is_the_former_loop_bit_for_bit(name, monkeypatch):
    model_module, former_loop = FAMILIES[name]
    torch.manual_seed(7)
    model = timm.create_model(name, num_classes=10)
    after_build = torch.get_rng_state()

    monkeypatch.setattr(model_module, "init_weights", lambda module, name="", **kwargs: None)
    torch.manual_seed(7)
    reference = timm.create_model(name, num_classes=10)  # PyTorch's default init only
    former_loop(reference)
    assert torch.equal(torch.get_rng_state(), after_build)  # the same random draws, in the same order

    state, expected = model.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    for key in state:
        assert torch.equal(state[key], expected[key]), key


@pytest.mark.parametrize(
    "name,linear_weight_std,linear_bias_zero",
    [("cifar_resnet8x4", None, False), ("cifar_wrn_40_1", None, True), ("cifar_vgg8", 0.01, True),
     ("cifar_mobilenet_v2", 0.01, True)],
)
def test_init_statistics(name, linear_weight_std, linear_bias_zero):
    """Kaiming normal convs (fan-out, std sqrt(2 / fan_out)), BN at one/zero, each family's linear init."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100)
    # fan_out = out_channels * kernel area (PyTorch's, whatever the groups)
    weights = torch.cat([
        (m.weight / (2.0 / (m.weight.shape[0] * m.weight[0, 0].numel())) ** 0.5).flatten()
        for m in model.modules() if isinstance(m, nn.Conv2d)
    ])
    # Standardised draws: ~1e5..1e7 samples of N(0, 1), so mean and std sit within a few 1e-3 of 0 and 1.
    assert abs(weights.mean().item()) < 0.01 and abs(weights.std().item() - 1) < 0.01
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            assert not m.bias.any()
        if isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and not m.bias.any()
    fc = model.get_classifier()
    assert (not fc.bias.any()) == linear_bias_zero
    # PyTorch's default linear init is uniform in +-1/sqrt(fan_in): std 1/sqrt(3 * fan_in).
    std = linear_weight_std or (3 * fc.in_features) ** -0.5
    assert fc.weight.std().item() == pytest.approx(std, rel=0.05, abs=1e-4)  # 1e4..1e5 draws: std within ~1%


def test_shufflenet_keeps_pytorch_default_init():
    """The zoo's ShuffleNetV1 sets no init of its own: BN stays at PyTorch's one/zero, convs at its uniform."""
    torch.manual_seed(0)
    model = timm.create_model("cifar_shufflenet_v1")
    conv = model.stages[2][0].conv1
    fan_in = conv.in_channels // conv.groups
    assert conv.weight.abs().max().item() <= fan_in**-0.5  # kaiming_uniform(a=sqrt(5)): bound 1/sqrt(fan_in)


def test_init_weights_rejects_an_unknown_linear_init():
    with pytest.raises(ValueError, match=r"linear_init='xavier': expected 'torch', 'zero_bias' or 'normal'"):
        init_weights(nn.Linear(2, 2), linear_init="xavier")
