"""Transforms from a timm data config, the batch transform, the collate and the teacher input
conversion, against normalisation and crops computed by hand in numpy, timm's own evaluation transform and
transformers' TimmWrapperImageProcessor."""

import numpy as np
import pytest
import timm
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform, resolve_data_config
from transformers import AutoImageProcessor, pipeline

from ltkd_hf.data import (
    ImageClassificationTransform,
    apply_transforms,
    build_transforms,
    collate_fn,
    normalization_converter,
)
from ltkd_hf.hub import save_student

# What the CIFAR models declare (ltkd_hf is imported above, so timm knows them): crop_pct 1, bilinear.
CIFAR = resolve_data_config(model=timm.create_model("cifar_resnet8x4"))
# An ImageNet model's 224 input: crop_pct 0.95, bicubic, ImageNet mean/std.
IMAGENET_224 = resolve_data_config(pretrained_cfg=timm.get_pretrained_cfg("resnet18.a1_in1k").to_dict())


def random_image(height=32, width=32, seed=0):
    return PILImage.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


def normalise(pixels, mean, std):
    """uint8 HxWx3 -> normalised 3xHxW, channel by channel."""
    out = np.empty((3,) + pixels.shape[:2], dtype=np.float64)
    for c in range(3):
        out[c] = (pixels[..., c] / 255.0 - mean[c]) / std[c]
    return out


def test_configs_are_what_the_tests_assume():
    assert CIFAR == {
        "input_size": (3, 32, 32),
        "interpolation": "bilinear",
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    assert IMAGENET_224["input_size"] == (3, 224, 224) and IMAGENET_224["crop_pct"] == 0.95
    assert IMAGENET_224["interpolation"] == "bicubic" and IMAGENET_224["mean"] == IMAGENET_DEFAULT_MEAN


def test_small_eval_is_to_tensor_and_normalize():
    image = random_image()
    out = build_transforms(CIFAR, train=False)(image)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    np.testing.assert_allclose(out.numpy(), normalise(np.asarray(image), CIFAR["mean"], CIFAR["std"]), atol=1e-5)


def test_small_eval_resizes_other_sizes_with_the_config_interpolation():
    image = random_image(8, 8)
    out = build_transforms(dict(CIFAR, interpolation="nearest"), train=False)(image)
    upscaled = np.repeat(np.repeat(np.asarray(image), 4, axis=0), 4, axis=1)
    np.testing.assert_allclose(out.numpy(), normalise(upscaled, CIFAR["mean"], CIFAR["std"]), atol=1e-5)


def test_small_train_is_a_padded_random_crop_with_flip():
    image = random_image()
    candidates = padded_crop_candidates(np.asarray(image))
    transform = build_transforms(CIFAR, train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = transform(image).numpy()
        matches = [key for key, ref in candidates.items() if np.allclose(out, ref, atol=1e-5)]
        assert matches, "a training image must be one padded crop (optionally flipped) of the input"
        seen.update(matches)
    assert len(seen) > 1 and any(flip for _, _, flip in seen)


def padded_crop_candidates(pixels):
    """Every 32x32 crop of ``pixels`` (32x32x3) zero-padded by 4, flipped or not, normalised with CIFAR's."""
    padded = np.zeros((40, 40, 3), dtype=np.uint8)
    padded[4:36, 4:36] = pixels
    candidates = {}
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + 32, dx : dx + 32]
            candidates[(dy, dx, False)] = normalise(crop, CIFAR["mean"], CIFAR["std"])
            candidates[(dy, dx, True)] = normalise(crop[:, ::-1], CIFAR["mean"], CIFAR["std"])
    return candidates


@pytest.mark.parametrize("height, width", [(24, 40), (40, 24)])
def test_small_train_keeps_the_aspect_ratio_of_non_square_images(height, width):
    image = random_image(height, width, seed=3)
    # Short side 24 -> 32, long side 40 -> int(40 * 32 / 24) = 53, bilinear; centre crop: offset round(21 / 2) = 10.
    long = int(max(height, width) * 32 / min(height, width))
    resized = np.asarray(image.resize((long, 32) if width > height else (32, long), PILImage.BILINEAR))
    offset = int(round((long - 32) / 2))
    centre = resized[:, offset : offset + 32] if width > height else resized[offset : offset + 32]
    candidates = padded_crop_candidates(centre)
    squashed = np.asarray(image.resize((32, 32), PILImage.BILINEAR))
    transform = build_transforms(CIFAR, train=True)
    torch.manual_seed(0)
    for _ in range(10):
        out = transform(image).numpy()
        assert out.shape == (3, 32, 32)
        assert any(np.allclose(out, ref, atol=1e-5) for ref in candidates.values())
        assert not any(np.allclose(out, ref, atol=1e-2) for ref in padded_crop_candidates(squashed).values())


def save_folder(tmp_path, architecture, data_config=None):
    model = timm.create_model(architecture, num_classes=2).eval()
    return model, save_student(model, tmp_path / architecture, label_names=["a", "b"], data_config=data_config)


@pytest.mark.parametrize(
    "config, architecture", [(CIFAR, "cifar_resnet8x4"), (IMAGENET_224, "test_resnet")], ids=["cifar32", "in224"]
)
def test_eval_is_timms_eval_transform_and_the_image_processors_on_non_square_images(tmp_path, config, architecture):
    ours = build_transforms(config, train=False)
    timms = create_transform(**config, is_training=False)
    _, folder = save_folder(tmp_path, architecture, data_config=None if config is CIFAR else config)
    processor = AutoImageProcessor.from_pretrained(folder)  # transformers' TimmWrapperImageProcessor
    assert type(processor).__name__ == "TimmWrapperImageProcessor"
    size = config["input_size"][1]
    for height, width in [(24, 40), (40, 24), (300, 200)]:
        image = random_image(height, width, seed=height)
        out = ours(image)
        assert out.shape == (3, size, size)
        assert torch.equal(out, timms(image))
        torch.testing.assert_close(out, processor(image)["pixel_values"][0], atol=1e-6, rtol=0)
        # and not the squashing resize: the same image resized to (size, size) ignoring its aspect ratio
        squashed = normalise(np.asarray(image.resize((size, size), PILImage.BILINEAR)), config["mean"], config["std"])
        assert np.abs(out.numpy() - squashed).max() > 0.1


def test_eval_scores_equal_the_image_classification_pipelines(tmp_path):
    model, folder = save_folder(tmp_path, "cifar_resnet8x4")
    classifier = pipeline("image-classification", model=str(folder), device="cpu")
    image = random_image(24, 40, seed=5)
    with torch.no_grad():
        expected = model(build_transforms(CIFAR, train=False)(image).unsqueeze(0)).softmax(-1)[0]
    scores = {row["label"]: row["score"] for row in classifier(image, top_k=2)}
    assert scores == pytest.approx({"a": expected[0].item(), "b": expected[1].item()}, abs=1e-5)


def test_large_inputs_use_timm_recipes_train_random_eval_deterministic():
    config = timm.data.resolve_data_config(model=timm.create_model("resnet18", num_classes=3))
    image = random_image(300, 260)
    train, evaluation = build_transforms(config, train=True), build_transforms(config, train=False)
    train_steps = [type(t).__name__ for t in train.transforms]
    eval_steps = [type(t).__name__ for t in evaluation.transforms]
    assert "RandomResizedCropAndInterpolation" in train_steps and "RandomHorizontalFlip" in train_steps
    assert "CenterCrop" in eval_steps and not any(name.startswith("Random") for name in eval_steps)
    assert evaluation(image).shape == train(image).shape == (3, 224, 224)
    assert torch.equal(evaluation(image), evaluation(image))


def test_batch_transform_converts_to_rgb_and_renames():
    gray = PILImage.fromarray(np.full((32, 32), 128, dtype=np.uint8))
    transform = ImageClassificationTransform(build_transforms(CIFAR, train=False))
    out = transform({"image": [gray, random_image()], "label": [3, 1]})
    assert out["labels"] == [3, 1] and set(out) == {"pixel_values", "labels"}
    expected = normalise(np.full((32, 32, 3), 128, dtype=np.uint8), CIFAR["mean"], CIFAR["std"])
    np.testing.assert_allclose(out["pixel_values"][0].numpy(), expected, atol=1e-5)


def test_16_bit_grayscale_is_scaled_to_8_bits_on_both_data_paths(tmp_path):
    """PIL's convert("RGB") clips a 16-bit PNG's values at 255: every image of a dark class and a bright one
    became the same white tensor, and the run trained on it without a word."""
    from ltkd_hf.data import InMemoryImages

    values = np.random.RandomState(0).randint(0, 65536, (32, 32)).astype(np.uint16)
    PILImage.fromarray(values).save(tmp_path / "wide.png")
    opened = PILImage.open(tmp_path / "wide.png")
    assert opened.mode in ("I;16", "I")  # as Pillow opens a 16-bit PNG
    eight_bit = np.repeat(np.rint(values / 257.0).astype(np.uint8)[..., None], 3, axis=2)  # 65535 -> 255
    expected = normalise(eight_bit, CIFAR["mean"], CIFAR["std"])
    out = ImageClassificationTransform(build_transforms(CIFAR, train=False))({"image": [opened], "label": [0]})
    np.testing.assert_allclose(out["pixel_values"][0].numpy(), expected, atol=1e-5)
    split = Dataset.from_dict({"image": [str(tmp_path / "wide.png")], "label": [0]},
                              features=Features({"image": Image(), "label": ClassLabel(names=["a"])}))
    in_memory = InMemoryImages.from_dataset(split, CIFAR, train=False)
    np.testing.assert_array_equal(in_memory.images[0].permute(1, 2, 0).numpy(), eight_bit)


def test_floating_point_images_are_refused_by_name(tmp_path):
    from ltkd_hf.data.verify import verify_images

    path = tmp_path / "float.tiff"
    PILImage.fromarray(np.random.RandomState(0).rand(8, 8).astype(np.float32)).save(path)
    split = Dataset.from_dict({"image": [str(path)], "label": [0]},
                              features=Features({"image": Image(), "label": ClassLabel(names=["a"])}))
    with pytest.raises(ValueError, match=rf"train split's image at file '{path}' holds floating-point pixels"):
        verify_images(split)


def small_dataset_dict():
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    rows = {"image": [random_image(seed=1), random_image(seed=2)], "label": [1, 0]}
    split = Dataset.from_dict(rows, features=features)
    return DatasetDict(train=split, test=split)


def test_apply_transforms_train_random_others_eval_then_collate():
    dd = apply_transforms(small_dataset_dict(), CIFAR)
    torch.manual_seed(0)
    train_draws = [dd["train"][0]["pixel_values"] for _ in range(8)]
    assert any(not torch.equal(train_draws[0], other) for other in train_draws[1:])
    batch = collate_fn([dd["test"][0], dd["test"][1]])
    assert batch["pixel_values"].dtype == torch.float32 and batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    for i, seed in enumerate((1, 2)):
        reference = normalise(np.asarray(random_image(seed=seed)), CIFAR["mean"], CIFAR["std"])
        np.testing.assert_allclose(batch["pixel_values"][i].numpy(), reference, atol=1e-5)


def test_apply_transforms_needs_standard_columns_and_a_full_config():
    dd = small_dataset_dict()
    renamed = DatasetDict(train=dd["train"].rename_column("image", "img"))
    with pytest.raises(ValueError, match=r"split 'train' lacks columns \['image'\].*load_image_dataset"):
        apply_transforms(renamed, CIFAR)
    with pytest.raises(ValueError, match=r"data_config lacks \['std'\].*resolve_data_config"):
        apply_transforms(dd, {"input_size": (3, 32, 32), "mean": (0, 0, 0)})
    with pytest.raises(ValueError, match=r"input_size'\] must be \(3, H, W\)"):
        build_transforms(dict(CIFAR, input_size=(32, 32)), train=False)
    with pytest.raises(ValueError, match=r"\['mean'\] must hold 3 values"):
        build_transforms(dict(CIFAR, mean=(0.5,)), train=False)


def test_normalization_converter_maps_student_inputs_to_teacher_inputs():
    teacher = dict(CIFAR, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = np.asarray(random_image())
    student_input = torch.tensor(normalise(pixels, CIFAR["mean"], CIFAR["std"]), dtype=torch.float32)
    convert = normalization_converter(CIFAR, teacher)
    converted = convert(student_input.unsqueeze(0))
    np.testing.assert_allclose(converted[0].numpy(), normalise(pixels, teacher["mean"], teacher["std"]), atol=1e-5)
    assert convert(student_input.to(torch.bfloat16)).dtype == torch.bfloat16
    assert normalization_converter(CIFAR, dict(CIFAR, interpolation="bicubic")) is None


def teacher_input_by_hand(student_input, student_cfg, teacher_cfg, covered, mode, crop=(0, 0)):
    """De-normalise with the student's mean/std, resize with the torch call written out, crop, normalise with
    the teacher's."""
    mean_s, std_s = (torch.tensor(student_cfg[k], dtype=torch.float64).view(3, 1, 1) for k in ("mean", "std"))
    mean_t, std_t = (torch.tensor(teacher_cfg[k], dtype=torch.float64).view(3, 1, 1) for k in ("mean", "std"))
    raw = student_input.double() * std_s + mean_s
    resized = torch.nn.functional.interpolate(raw, size=covered, mode=mode, antialias=True, align_corners=False)
    height, width = teacher_cfg["input_size"][1:]
    resized = resized[..., crop[0] : crop[0] + height, crop[1] : crop[1] + width]
    return ((resized - mean_t) / std_t).float()


def student_batch(cfg, seed=0):
    height, width = cfg["input_size"][1:]
    pixels = [np.asarray(random_image(height, width, seed=seed + i)) for i in range(2)]
    return torch.tensor(np.stack([normalise(p, cfg["mean"], cfg["std"]) for p in pixels]), dtype=torch.float32)


VIT_64 = {
    "input_size": (3, 64, 64),
    "interpolation": "bicubic",
    "mean": IMAGENET_DEFAULT_MEAN,
    "std": IMAGENET_DEFAULT_STD,
    "crop_pct": 0.9,
}


def test_normalization_converter_resizes_for_a_teacher_at_another_size():
    # A ViT student at 64x64 with ImageNet normalisation, a CIFAR CNN teacher at 32x32 (bilinear, antialiased).
    student_input = student_batch(VIT_64)
    convert = normalization_converter(VIT_64, CIFAR)
    assert (convert.size, convert.mode) == ((32, 32), "bilinear")
    out = convert(student_input)
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, teacher_input_by_hand(student_input, VIT_64, CIFAR, (32, 32), "bilinear"))
    # the antialias matters when downsampling: a plain bilinear resize is not what the converter does
    plain = torch.nn.functional.interpolate(student_input, size=(32, 32), mode="bilinear", antialias=False)
    assert (out - convert.__class__(convert.scale, convert.shift)(plain)).abs().max() > 0.05
    # the other way round: the CIFAR student, a teacher at 224 with the ViT's bicubic ImageNet config
    teacher_224 = dict(VIT_64, input_size=(3, 224, 224))
    cifar_input = student_batch(CIFAR, seed=7)
    up = normalization_converter(CIFAR, teacher_224)
    assert up(cifar_input).shape == (2, 3, 224, 224)
    expected = teacher_input_by_hand(cifar_input, CIFAR, teacher_224, (224, 224), "bicubic")
    torch.testing.assert_close(up(cifar_input), expected, atol=1e-4, rtol=0)
    # one image without a batch dimension, and half precision, come back in their own shape and dtype
    torch.testing.assert_close(convert(student_input[0]), out[0])
    half = convert(student_input.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and half.shape == (2, 3, 32, 32)
    torch.testing.assert_close(half.float(), out, atol=0.05, rtol=0.02)


def test_normalization_converter_same_normalisation_other_size_and_other_aspect_ratio():
    # Same mean/std, another size: only the resize (not None).
    small = dict(CIFAR, input_size=(3, 16, 16))
    student_input = student_batch(CIFAR)
    convert = normalization_converter(CIFAR, small)
    assert convert is not None and convert.scale == (1.0, 1.0, 1.0) and convert.shift == (0.0, 0.0, 0.0)
    expected = teacher_input_by_hand(student_input, CIFAR, small, (16, 16), "bilinear")
    torch.testing.assert_close(convert(student_input), expected)
    # A 48x64 student for a 32x32 teacher: scaled by 32/48 to cover 32x32 (32 x round(42.67) = 43), centre crop
    # offset (43 - 32) // 2 = 5: the aspect ratio is kept, nothing is squashed.
    wide = dict(VIT_64, input_size=(3, 48, 64))
    wide_input = student_batch(wide)
    expected = teacher_input_by_hand(wide_input, wide, CIFAR, (32, 43), "bilinear", crop=(0, 5))
    torch.testing.assert_close(normalization_converter(wide, CIFAR)(wide_input), expected)
    # nearest maps to torch's nearest-exact (PIL's nearest): an exact 2x upscale repeats every pixel
    nearest = dict(CIFAR, input_size=(3, 64, 64), interpolation="nearest")
    up = normalization_converter(CIFAR, nearest)(student_input)
    torch.testing.assert_close(up, student_input.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1))


def test_normalization_converter_checks_both_configs():
    with pytest.raises(ValueError, match=r"teacher_cfg lacks \['mean'\]"):
        normalization_converter(CIFAR, {"input_size": (3, 32, 32), "std": (1, 1, 1)})
    with pytest.raises(ValueError, match=r"student_cfg\['input_size'\] must be \(3, H, W\)"):
        normalization_converter(dict(CIFAR, input_size=(32, 32)), CIFAR)
