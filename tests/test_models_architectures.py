"""The CIFAR KD model zoo as timm models: layer definitions (parameter counts), timm's interface."""

import math

import pytest
import timm
import torch

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)

# ---- independent parameter counts, written from the zoo's layer tables --------------------------


def conv(cin, cout, k, groups=1, bias=False):
    return cin // groups * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def linear(cin, cout):
    return cin * cout + cout


def count_cifar_resnet(stem, planes, layers, bottleneck, classes):
    total = conv(3, stem, 3) + bn(stem)
    cin = stem
    for stage, (p, n) in enumerate(zip(planes, layers)):
        out = p * 4 if bottleneck else p
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            if bottleneck:
                total += conv(cin, p, 1) + bn(p) + conv(p, p, 3) + bn(p) + conv(p, out, 1) + bn(out)
            else:
                total += conv(cin, p, 3) + bn(p) + conv(p, p, 3) + bn(p)
            if stride != 1 or cin != out:
                total += conv(cin, out, 1) + bn(out)
            cin = out
    return total + linear(cin, classes)


def count_wrn(depth, widen, classes):
    n = (depth - 4) // 6
    total = conv(3, 16, 3)
    cin = 16
    for width in (16 * widen, 32 * widen, 64 * widen):
        for i in range(n):
            total += bn(cin) + conv(cin, width, 3) + bn(width) + conv(width, width, 3)
            if cin != width:
                total += conv(cin, width, 1)
            cin = width
    return total + bn(cin) + linear(cin, classes)


def count_vgg(cfg, classes):
    total, cin = 0, 3
    for block in cfg:
        for width in block:
            total += conv(cin, width, 3, bias=True) + bn(width)
            cin = width
    return total + linear(cin, classes)


def count_shufflenet(out_planes, blocks, groups, classes):
    total = conv(3, 24, 1) + bn(24)
    cin = 24
    for width, n in zip(out_planes, blocks):
        for i in range(n):
            branch = width - cin if i == 0 else width
            mid = branch // 4
            g1 = 1 if cin == 24 else groups
            total += conv(cin, mid, 1, g1) + bn(mid) + conv(mid, mid, 3, mid) + bn(mid)
            total += conv(mid, branch, 1, groups) + bn(branch)
            cin = width
    return total + linear(cin, classes)


def count_mobilenet_v2(width, t, classes):
    settings = [(1, 16, 1), (t, 24, 2), (t, 32, 3), (t, 64, 4), (t, 96, 3), (t, 160, 3), (t, 320, 1)]
    cin = int(32 * width)
    total = conv(3, cin, 3) + bn(cin)
    for ratio, c, n in settings:
        out = int(c * width)
        for _ in range(n):
            mid = cin * ratio
            total += conv(cin, mid, 1) + bn(mid) + conv(mid, mid, 3, mid) + bn(mid) + conv(mid, out, 1) + bn(out)
            cin = out
    return total + conv(cin, 1280, 1) + bn(1280) + linear(1280, classes)


VGG13 = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]
VGG8 = [[64], [128], [256], [512], [512]]

# name: (CRD / mdistiller figure in millions for 100 classes, independent count, stage features)
ZOO = {
    "cifar_resnet8x4": (1.23, lambda c: count_cifar_resnet(32, [64, 128, 256], [1, 1, 1], False, c), 4),
    "cifar_resnet32x4": (7.43, lambda c: count_cifar_resnet(32, [64, 128, 256], [5, 5, 5], False, c), 4),
    "cifar_wrn_40_2": (2.26, lambda c: count_wrn(40, 2, c), 4),
    "cifar_wrn_40_1": (0.57, lambda c: count_wrn(40, 1, c), 4),
    "cifar_vgg13": (9.46, lambda c: count_vgg(VGG13, c), 5),
    "cifar_vgg8": (3.96, lambda c: count_vgg(VGG8, c), 5),
    "cifar_shufflenet_v1": (0.95, lambda c: count_shufflenet([240, 480, 960], [4, 8, 4], 3, c), 4),
    "cifar_mobilenet_v2": (0.81, lambda c: count_mobilenet_v2(0.5, 6, c), 5),
    "cifar_resnet50": (23.71, lambda c: count_cifar_resnet(64, [64, 128, 256, 512], [3, 4, 6, 3], True, c), 5),
}
NAMES = list(ZOO)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_all_names_registered_and_exported():
    assert sorted(ltkd_hf.models.CIFAR_MODEL_NAMES) == sorted(NAMES)
    assert set(NAMES) <= set(timm.list_models("cifar_*"))


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_layer_table_and_zoo(name):
    figure, reference, _ = ZOO[name]
    count = n_params(timm.create_model(name))
    assert count == reference(100)
    # The zoo prints two decimals, rounded (WRN-40-2: 2.2552 -> 2.26) or truncated (VGG8: 3.9650 -> 3.96).
    assert figure in (round(count / 1e6, 2), math.floor(count / 1e4) / 100)
    assert n_params(timm.create_model(name, num_classes=10)) == reference(10)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_head_split(name):
    torch.manual_seed(0)
    model = timm.create_model(name)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 100)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[:2] == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), model(x))
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
        fc = model.get_classifier()
        torch.testing.assert_close(model(x), pooled @ fc.weight.T + fc.bias)


@pytest.mark.parametrize("name", NAMES)
def test_intermediates_match_feature_info(name):
    model = timm.create_model(name).eval()
    expected = ZOO[name][2]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        assert len(feats) == len(model.feature_info) == expected
        for feat, info in zip(feats, model.feature_info):
            assert feat.shape == (2, info["num_chs"], 32 // info["reduction"], 32 // info["reduction"])
        torch.testing.assert_close(final, model.forward_features(x))
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2
        torch.testing.assert_close(last_two[1], feats[-1])
        normed = model.forward_intermediates(x, indices=[expected - 1], norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], model.forward_features(x))
        partial, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(early[0], feats[1])
        torch.testing.assert_close(partial, feats[1])
        getter = timm.create_model(name, features_only=True).eval()
        getter.load_state_dict(model.state_dict(), strict=False)
        assert [f.shape[1] for f in getter(x)] == [i["num_chs"] for i in model.feature_info]


@pytest.mark.parametrize("name", ["cifar_resnet8x4", "cifar_wrn_40_1", "cifar_mobilenet_v2"])
def test_reset_classifier_and_any_class_count(name):
    model = timm.create_model(name, num_classes=7)
    assert model.num_classes == 7 and model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    model.reset_classifier(13)
    assert model.num_classes == 13 and model.get_classifier().out_features == 13
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 13)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)
    headless = timm.create_model(name, num_classes=0)
    assert headless(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


def test_pretrained_cfg_is_cifar100_without_weights():
    for name in NAMES:
        cfg = timm.create_model(name).pretrained_cfg
        assert cfg["input_size"] == (3, 32, 32)
        assert cfg["mean"] == (0.5071, 0.4865, 0.4409) and cfg["std"] == (0.2673, 0.2564, 0.2762)
        assert cfg["num_classes"] == 100 and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
        assert not cfg.get("url") and not cfg.get("hf_hub_id")
        data = timm.data.resolve_data_config({}, model=timm.create_model(name))
        assert data["input_size"] == (3, 32, 32) and data["mean"] == cfg["mean"]


def test_vgg_pools_before_last_block_only_at_64px():
    small = timm.create_model("cifar_vgg8")
    large = timm.create_model("cifar_vgg8", img_size=64)
    assert n_params(small) == n_params(large)
    assert small.forward_features(torch.randn(2, 3, 32, 32)).shape[-1] == 4
    assert large.forward_features(torch.randn(2, 3, 64, 64)).shape[-1] == 4
    assert [i["reduction"] for i in large.feature_info] == [1, 2, 4, 8, 16]


def test_wrn_rejects_bad_depth():
    with pytest.raises(ValueError, match=r"depth=41 .* 6n \+ 4"):
        timm.create_model("cifar_wrn_40_1", depth=41)


def test_wrn_shortcuts_carry_raw_input_or_activated_projection():
    model = timm.create_model("cifar_wrn_40_1").eval()
    identity_block, projection_block = model.stages[0][0], model.stages[1][0]  # 16->16, 16->32 stride 2
    for block in (identity_block, projection_block):
        torch.nn.init.zeros_(block.conv2.weight)  # the residual branch then adds nothing
        block.bn1.running_mean.uniform_(-1, 1)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(identity_block(x), x)
        activated = torch.relu((x - projection_block.bn1.running_mean[None, :, None, None])
                               / torch.sqrt(projection_block.bn1.running_var[None, :, None, None] + 1e-5))
        expected = torch.nn.functional.conv2d(activated, projection_block.shortcut.weight, stride=2)
        torch.testing.assert_close(projection_block(x), expected)


def test_shufflenet_channel_shuffle_interleaves_groups():
    model = timm.create_model("cifar_shufflenet_v1")
    unit = model.stages[1][1]  # grouped unit: 3 groups
    channels = unit.conv1.out_channels
    x = torch.arange(channels, dtype=torch.float32).reshape(1, channels, 1, 1)
    per_group = channels // 3
    expected = [g * per_group + i for i in range(per_group) for g in range(3)]
    assert unit.shuffle(x).flatten().tolist() == expected
    assert model.stages[0][0].conv1.groups == 1  # the 24-channel stem output is not grouped
