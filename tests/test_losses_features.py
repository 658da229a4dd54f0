"""The feature baselines: capture_features, ReviewKD and CAT-KD.

References are written here from the papers' / authors' definitions with plain tensor ops (convolutions
as sums of shifted products, nearest resizing and adaptive pooling by index arithmetic, BN from batch
moments, CAMs class by class), in float64, sharing no code with ``ltkd_hf.losses``.
"""

import ast
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import ltkd_hf  # noqa: F401  (registers the CIFAR architectures)
from ltkd_hf.losses import (
    CATKD_AUTHOR_SETTINGS,
    capture_features,
    catkd_loss,
    create_loss,
    hcl_loss,
    preact_points,
    reviewkd_channels,
)
from ltkd_hf.models import CIFAR_MODEL_NAMES, CIFAR_PAIRS, create_student, unwrap_timm

PAIRS = list(CIFAR_PAIRS)  # (teacher, student): the paper's seven CIFAR pairs
# (channels, side) of the ReviewKD levels: stages after the stem, then the pooled feature.
LEVELS = {
    "cifar_resnet8x4": [(64, 32), (128, 16), (256, 8), (256, 1)],
    "cifar_resnet32x4": [(64, 32), (128, 16), (256, 8), (256, 1)],
    "cifar_vgg8": [(128, 16), (256, 8), (512, 4), (512, 4), (512, 1)],
    "cifar_vgg13": [(128, 16), (256, 8), (512, 4), (512, 4), (512, 1)],
    "cifar_wrn_40_2": [(32, 32), (64, 16), (128, 8), (128, 1)],
    "cifar_wrn_40_1": [(16, 32), (32, 16), (64, 8), (64, 1)],
    "cifar_shufflenet_v1": [(240, 16), (480, 8), (960, 4), (960, 1)],
    "cifar_mobilenet_v2": [(12, 16), (16, 8), (48, 4), (160, 2), (1280, 1)],
    "cifar_resnet50": [(256, 32), (512, 16), (1024, 8), (2048, 4), (2048, 1)],
}
MID = {"cifar_resnet8x4": 256, "cifar_wrn_40_1": 64, "cifar_vgg8": 512, "cifar_shufflenet_v1": 512,
       "cifar_mobilenet_v2": 512}


def _images(batch=2, seed=0):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------------------------------------
# plain references
# ---------------------------------------------------------------------------------------------
def ref_nearest(x, size):
    """Nearest resize: output index i reads input index floor(i * in / out)."""
    h, w = x.shape[-2:]
    rows = [math.floor(i * h / size[0]) for i in range(size[0])]
    cols = [math.floor(j * w / size[1]) for j in range(size[1])]
    return x[:, :, rows][:, :, :, cols]


def ref_adaptive_avg(x, k):
    """Adaptive average pooling to k x k: bin i covers floor(i*H/k) .. ceil((i+1)*H/k)."""
    h, w = x.shape[-2:]
    rows = []
    for i in range(k):
        cells = []
        for j in range(k):
            r0, r1 = (i * h) // k, -((-(i + 1) * h) // k)
            c0, c1 = (j * w) // k, -((-(j + 1) * w) // k)
            cells.append(x[:, :, r0:r1, c0:c1].mean(dim=(2, 3)))
        rows.append(torch.stack(cells, -1))
    return torch.stack(rows, -2)


def ref_conv1x1(x, weight, bias=None):
    out = torch.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias[None, :, None, None]


def ref_conv3x3(x, weight):
    """3x3, stride 1, zero padding 1: the sum over the 9 taps of weight-mixed shifted inputs."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return sum(
        torch.einsum("oi,bihw->bohw", weight[:, :, dy, dx], padded[:, :, dy:dy + h, dx:dx + w])
        for dy in range(3) for dx in range(3)
    )


def ref_bn(x, bn, training):
    if training:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    else:
        mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def ref_review(abfs, student_levels, teacher_sizes, training):
    """The authors' ReviewKD.forward: ABFs deepest first, residual handed to the shallower level."""
    outputs, residual = [None] * len(abfs), None
    for level in reversed(range(len(abfs))):
        abf = abfs[level]
        x = ref_bn(ref_conv1x1(student_levels[level], abf.conv1[0].weight), abf.conv1[1], training)
        if level < len(abfs) - 1:
            residual = ref_nearest(residual, x.shape[-2:])
            att = torch.sigmoid(ref_conv1x1(torch.cat([x, residual], 1), abf.att_conv[0].weight, abf.att_conv[0].bias))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(teacher_sizes[level]):
            x = ref_nearest(x, teacher_sizes[level])
        outputs[level] = ref_bn(ref_conv3x3(x, abf.conv2[0].weight), abf.conv2[1], training)
        residual = x
    return outputs


def ref_hcl(student, teacher):
    total = 0.0
    for fs, ft in zip(student, teacher):
        ft = ft.detach()
        terms, weight = [(((fs - ft) ** 2).mean(), 1.0)], 1.0
        for k in (4, 2, 1):
            if k < fs.shape[-1]:
                weight /= 2
                terms.append((((ref_adaptive_avg(fs, k) - ref_adaptive_avg(ft, k)) ** 2).mean(), weight))
        total = total + sum(t * w for t, w in terms) / sum(w for _, w in terms)
    return total


def ref_cams(fmap, weight, resolution, normalize):
    """CAM_c = sum_k W_ck F_k at full size, class by class, then pooled (and L2-normalised per CAM)."""
    cams = torch.stack(
        [sum(weight[c, k] * fmap[:, k] for k in range(weight.shape[1])) for c in range(weight.shape[0])], 1
    )
    cams = ref_adaptive_avg(cams, resolution)
    if normalize:
        cams = cams / torch.sqrt((cams**2).sum(dim=(2, 3), keepdim=True)).clamp_min(1e-12)
    return cams


def ref_cat(fs, ws, ft, wt, weight, resolution, normalize):
    cs = ref_cams(fs, ws, resolution, normalize)
    ct = ref_cams(ft.detach(), wt.detach(), resolution, normalize)
    return weight * ((cs - ct) ** 2).mean()


# ---------------------------------------------------------------------------------------------
# capture_features
# ---------------------------------------------------------------------------------------------
def _preact_reference(model, x, stages):
    """Each stem/stage feature before its closing activation, recomputed from the model's layers."""
    kind = type(model).__name__
    if kind == "WideResNet":  # the zoo's WRN preact: the next BN applied, no ReLU
        # stages[j] is model.stages[j - 1]'s output; the block after it is model.stages[j][0]
        return [stages[0]] + [model.stages[j][0].bn1(stages[j]) for j in range(1, len(stages) - 1)] + [
            model.final[0](stages[-1])
        ]
    out = [model.stem[:-1](x)]  # every other stem ends with its ReLU
    for index, stage in enumerate(model.stages):
        prev = stages[index]
        if kind == "CifarVGG":
            out.append(stage[:-1](prev))
        elif kind == "CifarMobileNetV2":
            out.append(stage(prev))  # linear bottleneck: no closing activation
        elif kind == "CifarResNet":
            inp = stage[:-1](prev)
            blk = stage[-1]
            shortcut = inp if blk.downsample is None else blk.downsample(inp)
            if hasattr(blk, "act3"):
                body = blk.bn3(blk.conv3(blk.act2(blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(inp))))))))
            else:
                body = blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(inp)))))
            out.append(body + shortcut)
        elif kind == "ShuffleNetV1":
            inp = stage[:-1](prev)
            u = stage[-1]
            body = u.bn3(u.conv3(u.act(u.bn2(u.conv2(u.shuffle(u.act(u.bn1(u.conv1(inp)))))))))
            out.append(torch.cat([body, u.shortcut(inp)], 1) if u.stride == 2 else body + u.shortcut(inp))
    return out


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_capture_equals_forward_intermediates(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = _images()
    with torch.no_grad():
        with capture_features(model, preact=True) as feats:
            logits = model(x)
        assert _no_hooks(model)
        final, stages = model.forward_intermediates(x)
        assert len(feats["stages"]) == len(stages) == len(model.feature_info)
        for got, want in zip(feats["stages"], stages):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(feats["final_map"], model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(feats["pooled"], model.forward_head(final, pre_logits=True), rtol=0, atol=0)
        torch.testing.assert_close(logits, model.forward_head(final), rtol=0, atol=0)
        assert feats["classifier_weight"] is model.get_classifier().weight
        preact = _preact_reference(model, x, stages)
        assert len(feats["preact_stages"]) == len(preact)
        for got, want in zip(feats["preact_stages"], preact):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if "mobilenet" not in name and "wrn" not in name:  # the deepest feature really is before a ReLU
            assert feats["preact_stages"][-1].min() < 0 <= feats["stages"][-1].min()


def test_capture_through_the_trainer_wrapper_and_its_gradients():
    """Hooks on the bare timm model fill the dict when the TimmWrapper's forward runs; gradients flow."""
    student = create_student("cifar_resnet8x4", num_classes=10)
    inner = unwrap_timm(student)
    x = _images()
    with capture_features(student) as feats:
        logits = student(pixel_values=x).logits
    assert _no_hooks(student)
    with torch.no_grad():
        _, stages = inner.forward_intermediates(x)
    for got, want in zip(feats["stages"], stages):
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)
    assert feats["classifier_weight"] is inner.head.fc.weight
    feats["stages"][2].sum().backward()
    assert inner.stages[1][0].conv1.weight.grad.abs().sum() > 0  # the captured tensor is in the graph
    assert inner.stages[2][0].conv1.weight.grad is None and torch.isfinite(logits).all()


def test_capture_generic_timm_model_and_preact_errors():
    model = timm.create_model("test_resnet", num_classes=10).eval()
    x = _images()
    with torch.no_grad(), capture_features(model) as feats:
        model(x)
    torch.testing.assert_close(feats["final_map"], model.forward_features(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"preact=True knows the pre-activation features of the CIFAR architectures"
                       r" .* got ResNet; capture with preact=False \(and build ReviewKD with teacher_preact=False\)"):
        with capture_features(model, preact=True):
            pass
    assert _no_hooks(model)
    headless = timm.create_model("cifar_resnet8x4", num_classes=0)
    with pytest.raises(ValueError, match="has no classifier weight .*build it with num_classes > 0"):
        with capture_features(headless):
            pass


def _declare_resnet_preact(model):
    """A timm ResNet declaring its pre-activation features the way ltkd_hf's CIFAR models do."""
    model.feature_info[0]["preact"] = ("act1", "input")
    for info in model.feature_info[1:]:
        last = model.get_submodule(info["module"])[-1]
        act = "act3" if hasattr(last, "act3") else "act2"
        info["preact"] = (f"{info['module']}.{len(model.get_submodule(info['module'])) - 1}.{act}", "input")
    return model


def test_preact_is_read_from_the_models_declaration_not_its_class():
    """A plain timm ResNet (not a CIFAR class) that declares "preact" in its feature_info gets preact features:
    the input of each closing ReLU, so ReLU(preact) is the post-activation feature itself."""
    # zero_init_last=False: with timm's zeroed last BN each block would add nothing to its (non-negative) input
    model = _declare_resnet_preact(timm.create_model("test_resnet", num_classes=10, zero_init_last=False)).eval()
    x = _images()
    with torch.no_grad():
        with capture_features(model, preact=True) as feats:
            model(x)
        _, stages = model.forward_intermediates(x)
        torch.testing.assert_close(feats["preact_stages"][0], model.bn1(model.conv1(x)), rtol=0, atol=0)
    assert len(feats["preact_stages"]) == len(stages) == 5
    for got, post in zip(feats["preact_stages"], stages):
        torch.testing.assert_close(torch.relu(got), post, rtol=0, atol=0)
        assert got.min() < 0  # cloned before the in-place ReLU ran
    assert _no_hooks(model)


def test_preact_declaration_errors_name_the_model_and_the_entry():
    model = timm.create_model("test_resnet", num_classes=10)
    model.feature_info[0]["preact"] = ("act1", "input")
    with pytest.raises(ValueError, match=r"the feature_info of ResNet declares 'preact' for entries \[0\] of 5; "
                       r"declare it for every entry \(the stem and each stage\) or for none"):
        with capture_features(model, preact=True):
            pass
    _declare_resnet_preact(model)
    model.feature_info[2]["preact"] = ("layer2.0.act2", "before")
    with pytest.raises(ValueError, match=r"the feature_info of ResNet, entry 2: 'preact' is \('layer2.0.act2', "
                       r"'before'\), expected \(submodule name, 'input' or 'output'\)"):
        preact_points(model)
    model.feature_info[2]["preact"] = ("layer2.0.act9", "input")
    with pytest.raises(ValueError, match=r"the feature_info of ResNet, entry 2: 'preact' names no submodule"):
        preact_points(model)
    assert _no_hooks(model)


def test_reviewkd_post_activation_on_plain_timm_models():
    """A timm model without preact declarations: ReviewKD with teacher_preact=False reads the stage outputs
    after their activation (forward_intermediates') and the pooled feature, as the authors' code does."""
    student = timm.create_model("test_resnet", num_classes=10).train()
    torch.manual_seed(1)
    teacher = timm.create_model("test_resnet", num_classes=10).eval()
    loss_fn = create_loss("reviewkd", student=student, teacher=teacher, teacher_preact=False, mid_channels=8).double()
    assert reviewkd_channels(teacher) == [i["num_chs"] for i in teacher.feature_info[1:]] + [teacher.num_features]
    x = _images(3)
    with capture_features(student, **loss_fn.student_capture) as sf:
        zs = student(x)
    with torch.no_grad(), capture_features(teacher, **loss_fn.teacher_capture) as tf:
        zt = teacher(x)
        _, t_stages = teacher.forward_intermediates(x)
    assert "preact_stages" not in tf
    out = loss_fn(zs, zt, student_features=sf, teacher_features=tf)
    with torch.no_grad():
        _, s_stages = student.forward_intermediates(x)
        s_pooled, t_pooled = student.forward_head(student.forward_features(x), pre_logits=True), tf["pooled"]
    s_levels = [f.double() for f in s_stages[1:]] + [s_pooled.double()[:, :, None, None]]
    t_levels = [f.double() for f in t_stages[1:]] + [t_pooled.double()[:, :, None, None]]
    reviewed = ref_review(loss_fn.abfs, s_levels, [f.shape[-2:] for f in t_levels], training=True)
    # float64 from float32 features on both sides: only float64 rounding apart (the HCL is O(1))
    torch.testing.assert_close(out["hcl"], ref_hcl(reviewed, t_levels), rtol=1e-10, atol=1e-12)


def test_losses_import_nothing_from_the_models_package():
    """The feature contract (feature_info, "preact") is all the losses know of a model."""
    package = Path(ltkd_hf.losses.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):  # made absolute: level 1 is ltkd_hf.losses, level 2 ltkd_hf
                parent = ".".join(["ltkd_hf", "losses"][: 3 - node.level] if node.level else [])
                source = ".".join(filter(None, [parent, node.module]))
                names = [source] + [f"{source}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n == "ltkd_hf.models" or n.startswith("ltkd_hf.models.") for n in names), (path.name, names)


# ---------------------------------------------------------------------------------------------
# ReviewKD
# ---------------------------------------------------------------------------------------------
def _randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen, dtype=b.dtype) + 0.5)


@pytest.mark.parametrize("training", [True, False])
def test_reviewkd_matches_loop_reference(training):
    # student levels 4@8x8, 6@4x4, 5@2x2, 7@1; teacher 3@16x16, 5@2x2, 4@2x2, 6@1: up- and down-sizing to
    # the teacher (the residual handed on is the resized one), fusion across sizes, a level already at the
    # teacher's size, and the unfused pooled level.
    s_shapes, t_shapes = [(4, 8), (6, 4), (5, 2), (7, 1)], [(3, 16), (5, 2), (4, 2), (6, 1)]
    loss_fn = create_loss("reviewkd", student=[c for c, _ in s_shapes], teacher=[c for c, _ in t_shapes],
                          reviewkd_loss_weight=2.5, mid_channels=3).double()
    _randomise(loss_fn, 1)
    loss_fn.train(training)
    gen = torch.Generator().manual_seed(2)
    b = 3
    s_stages = [torch.randn(b, 2, 16, 16, generator=gen, dtype=torch.float64)] + [
        torch.randn(b, c, h, h, generator=gen, dtype=torch.float64, requires_grad=True) for c, h in s_shapes[:-1]
    ]
    s_pooled = torch.randn(b, s_shapes[-1][0], generator=gen, dtype=torch.float64, requires_grad=True)
    t_stages = [torch.randn(b, 2, 16, 16, dtype=torch.float64)] + [
        torch.randn(b, c, h, h, generator=gen, dtype=torch.float64, requires_grad=True) for c, h in t_shapes[:-1]
    ]
    t_pooled = torch.randn(b, t_shapes[-1][0], generator=gen, dtype=torch.float64)
    logits = torch.zeros(b, 10, dtype=torch.float64)

    out = loss_fn(logits, logits, student_features={"stages": s_stages, "pooled": s_pooled},
                  teacher_features={"preact_stages": t_stages, "pooled": t_pooled, "stages": None})
    s_levels = s_stages[1:] + [s_pooled[:, :, None, None]]
    t_levels = t_stages[1:] + [t_pooled[:, :, None, None]]
    reviewed = ref_review(loss_fn.abfs, s_levels, [(h, h) for _, h in t_shapes], training)
    reference = ref_hcl(reviewed, t_levels)
    assert set(out) == {"loss", "hcl"} and out["loss"].dim() == 0
    torch.testing.assert_close(out["hcl"], reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["loss"], 2.5 * reference, rtol=1e-12, atol=1e-12)

    inputs = s_stages[1:] + [s_pooled] + list(loss_fn.parameters())
    got = torch.autograd.grad(out["loss"], inputs)
    want = torch.autograd.grad(2.5 * reference, inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in got)
    # no gradient into the teacher
    assert torch.autograd.grad(loss_fn(logits, logits, student_features={"stages": s_stages, "pooled": s_pooled},
                               teacher_features={"preact_stages": t_stages, "pooled": t_pooled})["loss"],
                               t_stages[1], allow_unused=True)[0] is None


def test_hcl_weights_skip_pool_sizes_not_below_the_map():
    """A 4x4 level whose error averages out over every 2x2 block: only the full-size MSE (1) is left,
    divided by the weights of the sizes used, 1 + 1/2 (2x2) + 1/4 (1x1): 4x4 itself is skipped."""
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1.0  # +-1 checkerboard
    fs = checker.expand(1, 1, 4, 4).double()
    hcl = hcl_loss([fs], [torch.zeros_like(fs)])
    torch.testing.assert_close(hcl, torch.tensor(1 / 1.75, dtype=torch.float64))
    one = torch.ones(2, 3, 1, 1, dtype=torch.float64)  # 1x1: the plain MSE
    torch.testing.assert_close(hcl_loss([one], [3 * one]), torch.tensor(4.0, dtype=torch.float64))


@pytest.mark.parametrize("teacher_name,student_name", PAIRS)
def test_seven_pairs_shapes(teacher_name, student_name):
    student = timm.create_model(student_name, num_classes=10)
    teacher = timm.create_model(teacher_name, num_classes=10).eval()
    review = create_loss("reviewkd", student=student, teacher=teacher)
    assert review.student_channels == [c for c, _ in LEVELS[student_name]] == reviewkd_channels(student)
    assert review.teacher_channels == [c for c, _ in LEVELS[teacher_name]]
    assert review.mid_channels == MID[student_name]
    x = _images()
    with capture_features(student, **review.student_capture) as sf:
        zs = student(x)
    with torch.no_grad(), capture_features(teacher, **review.teacher_capture) as tf:
        zt = teacher(x)
    s_levels = sf["stages"][1:] + [sf["pooled"][:, :, None, None]]
    t_levels = tf["preact_stages"][1:] + [tf["pooled"][:, :, None, None]]
    assert [(f.shape[1], f.shape[-1]) for f in s_levels] == LEVELS[student_name]
    assert [(f.shape[1], f.shape[-1]) for f in t_levels] == LEVELS[teacher_name]
    reviewed = review.review(s_levels, [tuple(t.shape[-2:]) for t in t_levels])
    assert [r.shape for r in reviewed] == [t.shape for t in t_levels]
    terms = review(zs, zt, student_features=sf, teacher_features=tf)
    torch.testing.assert_close(terms["hcl"], hcl_loss(reviewed, t_levels))  # BN batch stats: same batch
    cat = create_loss("catkd")(zs, zt, student_features=sf, teacher_features=tf)
    for value in (terms["loss"], cat["loss"]):
        assert value.dtype == torch.float32 and value.dim() == 0 and torch.isfinite(value)


def test_reviewkd_errors_say_what_to_pass():
    with pytest.raises(ValueError, match=r"ReviewKD needs the student's feature channels: pass "
                       r"student=<the student model>"):
        create_loss("reviewkd", teacher=[8, 16])
    with pytest.raises(ValueError, match=r"the student has 3 feature levels \[8, 16, 16\] but the teacher has 4 "
                       r"\[8, 16, 32, 32\]"):
        create_loss("reviewkd", student=[8, 16, 16], teacher=[8, 16, 32, 32])
    with pytest.raises(ValueError, match=r"student=\[8, 0\]: expected a model or at least 2 positive channel counts"):
        create_loss("reviewkd", student=[8, 0], teacher=[8, 16])
    with pytest.raises(ValueError, match="reviewkd_loss_weight must be a finite number >= 0"):
        create_loss("reviewkd", student=[8, 16], teacher=[8, 16], reviewkd_loss_weight=-1.0)
    with pytest.raises(ValueError, match="mid_channels must be a positive integer"):
        create_loss("reviewkd", student=[8, 16], teacher=[8, 16], mid_channels=0)

    student = timm.create_model("cifar_resnet8x4", num_classes=10)
    teacher = timm.create_model("cifar_wrn_40_1", num_classes=10).eval()
    loss_fn = create_loss("reviewkd", student=student, teacher=[64, 128, 256, 256])
    x = _images()
    with capture_features(student) as sf:
        z = student(x)
    with torch.no_grad(), capture_features(teacher) as tf:
        teacher(x)
    with pytest.raises(ValueError, match=r"ReviewKD needs teacher_features as a dict with 'preact_stages' and "
                       r"'pooled' .*capture_features\(teacher, preact=True\)"):
        loss_fn(z, z, student_features=sf, teacher_features=tf)
    with pytest.raises(ValueError, match=r"ReviewKD needs student_features as a dict with 'stages' and 'pooled' "
                       r"\(got NoneType\)"):
        loss_fn(z, z, teacher_features=tf)
    post = create_loss("reviewkd", student=student, teacher=[64, 128, 256, 256], teacher_preact=False)
    with pytest.raises(ValueError, match=r"the teacher's features have channels \[16, 32, 64, 64\] .* "
                       r"built for \[64, 128, 256, 256\]"):
        post(z, z, student_features=sf, teacher_features=tf)
    with pytest.raises(ValueError, match=r"the student's features hold batch sizes \[2, 2, 1, 2\], expected 2"):
        bad = dict(sf, stages=sf["stages"][:3] + [sf["stages"][3][:1]])
        post(z, z, student_features=bad, teacher_features=tf)


# ---------------------------------------------------------------------------------------------
# CAT-KD
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution,normalize", [(2, False), (2, True), (4, True), (1, False)])
def test_catkd_matches_loop_reference(resolution, normalize):
    gen = torch.Generator().manual_seed(3)
    # student 2x2 (as MobileNetV2; resolution 4 up-samples), teacher 8x8 with other widths; 5 classes
    fs = torch.randn(3, 6, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(3, 4, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    loss_fn = create_loss("catkd", catkd_loss_weight=7.0, cam_resolution=resolution, normalize_cams=normalize)
    logits = torch.zeros(3, 5)
    out = loss_fn(logits, logits, student_features={"final_map": fs, "classifier_weight": ws},
                  teacher_features={"final_map": ft, "classifier_weight": wt})
    reference = ref_cat(fs, ws, ft, wt, 7.0, resolution, normalize)
    assert set(out) == {"loss", "cat"}
    torch.testing.assert_close(out["loss"], reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["cat"], reference / 7.0, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(out["loss"], (fs, ws, ft, wt), allow_unused=True)
    want = torch.autograd.grad(reference, (fs, ws), allow_unused=True)
    torch.testing.assert_close(got[:2], want, rtol=1e-10, atol=1e-12)
    assert got[2] is None and got[3] is None  # no gradient into the teacher
    assert got[1].abs().sum() > 0  # the student's classifier learns from the CAMs


def test_catkd_ignores_the_bias_and_is_float32_for_float32_inputs():
    """CAMs from the weight alone: a classifier bias does not change the loss; float32 in, float32 out."""
    gen = torch.Generator().manual_seed(4)
    fs, ft = torch.randn(2, 6, 4, 4, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    ws, wt = torch.randn(5, 6, generator=gen), torch.randn(5, 3, generator=gen)
    out = catkd_loss(fs.bfloat16(), ws, ft.bfloat16(), wt)
    assert out["loss"].dtype == torch.float32
    expected = ref_cat(fs.bfloat16().double(), ws.double(), ft.bfloat16().double(), wt.double(), 15.0, 2, False)
    torch.testing.assert_close(out["loss"].double(), expected, rtol=1e-5, atol=1e-6)


def test_catkd_author_settings_cover_the_pairs():
    assert set(CATKD_AUTHOR_SETTINGS) == set(PAIRS)
    assert create_loss("catkd", **CATKD_AUTHOR_SETTINGS[("cifar_wrn_40_2", "cifar_shufflenet_v1")]).describe() == (
        "CAT-KD: 80.0*MSE(L2-normalised CAMs avg-pooled to 4x4), CAM_c = sum_k W_ck F_k (no bias)"
    )
    assert create_loss("catkd").describe().startswith("CAT-KD: 15.0*MSE(CAMs avg-pooled to 2x2)")


def test_catkd_errors_say_what_to_pass():
    fs, ws = torch.randn(2, 6, 4, 4), torch.randn(5, 6)
    with pytest.raises(ValueError, match=r"cam_resolution must be a positive integer .* got 0"):
        create_loss("catkd", cam_resolution=0)
    with pytest.raises(ValueError, match="catkd_loss_weight must be a finite number >= 0"):
        create_loss("catkd", catkd_loss_weight=float("nan"))
    with pytest.raises(ValueError, match="normalize_cams must be True or False"):
        create_loss("catkd", normalize_cams="yes")
    with pytest.raises(ValueError, match="the student's classifier has 5 classes but the teacher's has 4"):
        catkd_loss(fs, ws, fs, torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"the teacher's classifier_weight must be a \(num_classes, 6\) tensor "
                       r".* got \(5, 7\)"):
        catkd_loss(fs, ws, fs, torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"the student's final_map must be a \(B, K, H, W\) tensor .* got \(2, 6\)"):
        catkd_loss(fs.mean((2, 3)), ws, fs, ws)
    with pytest.raises(ValueError, match="the student's final_map holds 2 samples but the teacher's 1"):
        catkd_loss(fs, ws, fs[:1], ws)
    with pytest.raises(ValueError, match=r"CAT-KD needs teacher_features as a dict with 'final_map' and "
                       r"'classifier_weight' \(got \['stages'\]\)"):
        create_loss("catkd")(fs, fs, student_features={"final_map": fs, "classifier_weight": ws},
                             teacher_features={"stages": []})


# ---------------------------------------------------------------------------------------------
# one plain-PyTorch training step
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "teacher_name,student_name",
    [("cifar_resnet32x4", "cifar_resnet8x4"), ("cifar_wrn_40_2", "cifar_shufflenet_v1"),
     ("cifar_vgg13", "cifar_mobilenet_v2")],
)
def test_training_step(teacher_name, student_name):
    torch.manual_seed(0)
    student = timm.create_model(student_name, num_classes=10).train()
    teacher = timm.create_model(teacher_name, num_classes=10)
    with torch.no_grad():  # settle the teacher's BN statistics, so its features are of a trained scale
        teacher.train()(_images(8, seed=5))
    teacher.eval().requires_grad_(False)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    review = create_loss("reviewkd", student=student, teacher=teacher)
    cat = create_loss("catkd")
    optimizer = torch.optim.SGD([*student.parameters(), *review.parameters()], lr=0.05, momentum=0.9)
    x, labels = _images(4, seed=6), torch.tensor([0, 3, 7, 9])

    with capture_features(student, **review.student_capture) as sf:
        logits = student(x)
    with torch.no_grad(), capture_features(teacher, **review.teacher_capture) as tf:
        teacher_logits = teacher(x)
    r = review(logits, teacher_logits, labels, student_features=sf, teacher_features=tf)
    c = cat(logits, teacher_logits, labels, student_features=sf, teacher_features=tf)
    loss = F.cross_entropy(logits, labels) + r["loss"] + c["loss"]
    assert torch.isfinite(loss) and r["loss"] > 0 and c["loss"] > 0
    cat_grad = torch.autograd.grad(c["loss"], student.get_classifier().weight, retain_graph=True)[0]
    assert cat_grad.abs().sum() > 0

    before = {n: p.detach().clone() for n, p in review.named_parameters()}
    optimizer.zero_grad()
    loss.backward()
    for name, p in review.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    optimizer.step()
    for name, p in review.named_parameters():
        assert not torch.equal(p, before[name]), name
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    last = len(review.abfs) - 1
    assert set(review.state_dict()) >= {"abfs.0.conv1.0.weight", "abfs.0.conv1.1.running_mean",
                                        "abfs.0.att_conv.0.bias", f"abfs.{last}.conv2.0.weight"}
    assert f"abfs.{last}.att_conv.0.weight" not in review.state_dict()  # the pooled level fuses nothing
