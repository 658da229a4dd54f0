"""Transforms from a timm data config, the batch transform, the collate and the teacher input
conversion, against normalisation and crops computed by hand in numpy."""

import numpy as np
import pytest
import timm
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

from ltkd_hf.data import (
    ImageClassificationTransform,
    apply_transforms,
    build_transforms,
    collate_fn,
    normalization_converter,
)

CIFAR = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "mean": (0.5071, 0.4865, 0.4409),
    "std": (0.2673, 0.2564, 0.2762),
}


def random_image(height=32, width=32, seed=0):
    return PILImage.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


def normalise(pixels, mean, std):
    """uint8 HxWx3 -> normalised 3xHxW, channel by channel."""
    out = np.empty((3,) + pixels.shape[:2], dtype=np.float64)
    for c in range(3):
        out[c] = (pixels[..., c] / 255.0 - mean[c]) / std[c]
    return out


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
    padded = np.zeros((40, 40, 3), dtype=np.uint8)
    padded[4:36, 4:36] = np.asarray(image)
    candidates = {}
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + 32, dx : dx + 32]
            candidates[(dy, dx, False)] = normalise(crop, CIFAR["mean"], CIFAR["std"])
            candidates[(dy, dx, True)] = normalise(crop[:, ::-1], CIFAR["mean"], CIFAR["std"])
    transform = build_transforms(CIFAR, train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = transform(image).numpy()
        matches = [key for key, ref in candidates.items() if np.allclose(out, ref, atol=1e-5)]
        assert matches, "a training image must be one padded crop (optionally flipped) of the input"
        seen.update(matches)
    assert len(seen) > 1 and any(flip for _, _, flip in seen)


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


def test_normalization_converter_refuses_different_input_sizes():
    with pytest.raises(ValueError, match=r"input_size \(3, 32, 32\) and teacher_cfg input_size \(3, 224, 224\) differ"):
        normalization_converter(CIFAR, dict(CIFAR, input_size=(3, 224, 224)))
    with pytest.raises(ValueError, match=r"teacher_cfg lacks \['mean'\]"):
        normalization_converter(CIFAR, {"input_size": (3, 32, 32), "std": (1, 1, 1)})
