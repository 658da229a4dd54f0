"""In-memory uint8 splits and the batched augmentation, against the CPU transforms: evaluation images equal
timm's eval transform, training images are the CPU recipe's resize, every augmented sample is one of the CPU
transform's outcomes (padded crops computed in numpy) with its distribution, and the trainer's device path (the
batch the teacher and the student see, the logged loss) and the recipe flag."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from timm.data import resolve_data_config

from ltkd_hf import ClassGroups
from ltkd_hf.data import (
    BatchAugmentation,
    InMemoryImages,
    build_transforms,
    collate_images,
    in_memory_bytes,
    in_memory_datasets,
    normalize_images,
    random_crop_flip,
)
from ltkd_hf.losses import ltkd_loss
from ltkd_hf.models import create_student

from tiny_setup import CLASS_COUNTS, NUM_CLASSES, make_config, make_trainer

from ltkd_hf.cli import distill
from ltkd_hf.cli.arguments import RunArguments
from ltkd_hf.cli.parsing import parse_args
from ltkd_hf.cli.stages import cross_entropy_args, load_long_tailed, plan_stage, train_stage

REPO = Path(__file__).resolve().parents[1]

CIFAR = resolve_data_config(model=timm.create_model("cifar_resnet8x4"))  # 32x32, crop_pct 1, bilinear
IMAGENET_224 = resolve_data_config(pretrained_cfg=timm.get_pretrained_cfg("resnet18.a1_in1k").to_dict())
NAMES = [f"c{i}" for i in range(NUM_CLASSES)]


def random_pixels(height, width, seed):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def split_of(images, labels, names=NAMES):
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def normalise(pixels, mean, std):
    """uint8 HxWx3 -> normalised 3xHxW float64, channel by channel."""
    return np.stack([(pixels[..., c] / 255.0 - mean[c]) / std[c] for c in range(3)])


def padded_crops(pixels, padding=4):
    """Every outcome of RandomCrop((H, W), padding) with zero padding then RandomHorizontalFlip on ``pixels``
    (HxWx3 uint8): {(dy, dx, flipped): HxWx3 uint8}."""
    height, width = pixels.shape[:2]
    padded = np.zeros((height + 2 * padding, width + 2 * padding, 3), dtype=np.uint8)
    padded[padding : padding + height, padding : padding + width] = pixels
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy : dy + height, dx : dx + width]
            out[(dy, dx, False)], out[(dy, dx, True)] = crop, crop[:, ::-1]
    return out


@contextmanager
def one_thread():
    """Many small tensor operations: one thread avoids intra-op thread wake-ups that dominate them on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def as_hwc(image_chw: torch.Tensor) -> np.ndarray:
    return image_chw.permute(1, 2, 0).numpy()


# -- (a) the decoding equals the CPU path's deterministic steps --------------------------------------------------


@pytest.mark.parametrize("config", [CIFAR, IMAGENET_224], ids=["cifar32", "in224"])
def test_eval_images_normalised_equal_the_cpu_eval_transform(config):
    sizes = [(24, 40), (40, 24), (300, 200), (32, 32)]
    images = [PILImage.fromarray(random_pixels(h, w, seed=i)) for i, (h, w) in enumerate(sizes)]
    images.append(PILImage.fromarray(random_pixels(30, 50, seed=9)[..., 0]))  # grayscale: converted to RGB
    data = InMemoryImages.from_dataset(split_of(images, [0, 1, 2, 3, 4]), config, train=False)
    size = config["input_size"][1:]
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 3, *size)
    assert data.labels.tolist() == [0, 1, 2, 3, 4] and data.class_names == NAMES and not data.train
    cpu = build_transforms(config, train=False)
    expected = torch.stack([cpu(image.convert("RGB")) for image in images])
    ours = BatchAugmentation.from_data_config(config)(data.images, train=False)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(normalize_images(data.images, config["mean"], config["std"]), expected, atol=1e-6, rtol=0)
    item = data[1]
    assert set(item) == {"images", "labels", "index"} and item["labels"] == 1 and item["index"] == 1 and torch.equal(item["images"], data.images[1])


@pytest.mark.parametrize("height, width", [(24, 40), (40, 24)])
def test_train_images_are_the_cpu_resize_before_the_random_crop(height, width):
    image = PILImage.fromarray(random_pixels(height, width, seed=3))
    data = InMemoryImages.from_dataset(split_of([image], [0]), CIFAR, train=True)
    # By hand: short side 24 -> 32, long side int(40 * 32 / 24) = 53, bilinear; centre crop offset round(21 / 2).
    long = int(max(height, width) * 32 / min(height, width))
    resized = np.asarray(image.resize((long, 32) if width > height else (32, long), PILImage.BILINEAR))
    offset = int(round((long - 32) / 2))
    centre = resized[:, offset : offset + 32] if width > height else resized[offset : offset + 32]
    np.testing.assert_array_equal(as_hwc(data.images[0]), centre)
    # and the CPU training transform's outputs are padded crops of that stored image
    candidates = [normalise(c, CIFAR["mean"], CIFAR["std"]) for c in padded_crops(centre).values()]
    transform = build_transforms(CIFAR, train=True)
    torch.manual_seed(0)
    for _ in range(10):
        out = transform(image).numpy()
        assert any(np.allclose(out, ref, atol=1e-5) for ref in candidates)


# -- (b) the augmentation: the CPU transform's outcomes, uniformly, independently per sample ----------------------


def test_augmented_samples_are_padded_crops_of_their_own_image():
    pixels = [random_pixels(32, 32, seed=10 + i) for i in range(6)]
    images = torch.stack([torch.from_numpy(p).permute(2, 0, 1) for p in pixels])
    augment = BatchAugmentation.from_data_config(CIFAR)
    assert (augment.padding, augment.size) == (4, (32, 32))
    candidates = [
        {key: normalise(crop, CIFAR["mean"], CIFAR["std"]) for key, crop in padded_crops(p).items()} for p in pixels
    ]
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        out = augment(images, train=True, generator=generator).numpy()
        assert out.shape == (6, 3, 32, 32) and out.dtype == np.float32
        for i in range(6):
            matches = [key for key, ref in candidates[i].items() if np.allclose(out[i], ref, atol=1e-5)]
            assert len(matches) == 1, f"sample {i} is not a padded crop (flipped or not) of image {i}"
            seen.add(matches[0])
    assert len(seen) > 50 and {flip for _, _, flip in seen} == {False, True}
    # the same generator state gives the same batch; the augmentation is normalize(random_crop_flip)
    first = augment(images, train=True, generator=torch.Generator().manual_seed(7))
    crops = random_crop_flip(images, 4, torch.Generator().manual_seed(7))
    assert torch.equal(first, normalize_images(crops, CIFAR["mean"], CIFAR["std"]))
    assert torch.equal(first, augment(images, train=True, generator=torch.Generator().manual_seed(7)))


def test_augmentation_has_the_cpu_transforms_outcomes_uniformly_and_independently():
    # 8x8 images keep 160,000 samples cheap; the recipe is the same (padding 4: 9 x 9 offsets x 2 flips).
    config = dict(CIFAR, input_size=(3, 8, 8))
    pixels = random_pixels(8, 8, seed=1)
    crops = padded_crops(pixels)
    outcome_of = {crop.tobytes(): key for key, crop in crops.items()}
    assert len(outcome_of) == 162  # every outcome is a distinct image

    # The CPU transform's exact set of outcomes: each output is one of the 162 crops, and all of them occur.
    image = PILImage.fromarray(pixels)
    transform = build_transforms(config, train=True)
    mean, std = np.array(CIFAR["mean"]).reshape(3, 1, 1), np.array(CIFAR["std"]).reshape(3, 1, 1)
    torch.manual_seed(0)
    cpu_outcomes = set()
    for _ in range(3000):
        out = transform(image).numpy()
        key = outcome_of.get(np.round((out * std + mean) * 255).astype(np.uint8).transpose(1, 2, 0).tobytes())
        assert key is not None and np.allclose(out, normalise(crops[key], CIFAR["mean"], CIFAR["std"]), atol=1e-5)
        cpu_outcomes.add(key)
    assert cpu_outcomes == set(crops)

    # The device augmentation: 1,000 draws of a batch of 160 copies of the image.
    draws, batch = 1000, 160
    images = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).repeat(batch, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    keys = np.empty((draws, batch), dtype=object)
    with one_thread():
        for d in range(draws):
            out = random_crop_flip(images, 4, generator).permute(0, 2, 3, 1).contiguous().numpy()
            for i in range(batch):
                keys[d, i] = outcome_of.get(out[i].tobytes())
    assert all(key is not None for key in keys.flat), "every augmented sample must be one of the CPU outcomes"
    counts = Counter(keys.flat)
    mean_count = draws * batch / 162
    assert set(counts) == set(crops)
    assert all(abs(c - mean_count) < 0.3 * mean_count for c in counts.values()), counts.most_common(3)

    # Independence within a batch: the pairs (sample 2k, sample 2k + 1) of every draw.
    first, second = keys[:, 0::2].ravel(), keys[:, 1::2].ravel()
    pairs = len(first)
    dy_pairs = Counter((a[0], b[0]) for a, b in zip(first, second))
    flip_pairs = Counter((a[2], b[2]) for a, b in zip(first, second))
    assert len(dy_pairs) == 81 and all(abs(c - pairs / 81) < 0.3 * pairs / 81 for c in dy_pairs.values())
    assert len(flip_pairs) == 4 and all(abs(c - pairs / 4) < 0.3 * pairs / 4 for c in flip_pairs.values())
    same = sum(a == b for a, b in zip(first, second))
    assert abs(same - pairs / 162) < 0.3 * pairs / 162
    # and across draws: one position of the batch is not fixed
    assert len(set(keys[:, 0])) > 100


# -- (c) the trainer's device path --------------------------------------------------------------------------------


def cifar_student():
    torch.manual_seed(0)
    return create_student("test_convnext", num_classes=NUM_CLASSES, label_names=NAMES, pretrained_cfg_overlay=CIFAR)


def cifar_teacher():
    torch.manual_seed(1)
    teacher = timm.create_model("test_resnet", num_classes=NUM_CLASSES, pretrained_cfg_overlay=CIFAR)
    with torch.no_grad():
        teacher.get_classifier().weight.mul_(10.0)
    return teacher


def test_one_step_teacher_and_student_see_the_same_augmented_batch_and_ce_matches(tmp_path):
    pixels = [random_pixels(32, 32, seed=20 + i) for i in range(8)]
    labels = [i % NUM_CLASSES for i in range(8)]
    train = InMemoryImages.from_dataset(split_of([PILImage.fromarray(p) for p in pixels], labels), CIFAR, train=True)
    student, teacher = cifar_student(), cifar_teacher()
    seen = {"student": [], "teacher": []}
    student.register_forward_pre_hook(
        lambda m, args, kwargs: seen["student"].append(kwargs["pixel_values"].detach().clone()), with_kwargs=True
    )
    teacher.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0].detach().clone()))
    config = make_config(tmp_path, max_steps=1, learning_rate=0.0, device_augmentation=True)
    trainer = make_trainer(
        config, model=student, teacher_model=teacher, train_dataset=train, data_collator=collate_images
    )
    trainer.train()
    assert len(seen["student"]) == len(seen["teacher"]) == 1
    batch = seen["student"][0]
    assert batch.dtype == torch.float32 and batch.shape == (8, 3, 32, 32)
    assert torch.equal(batch, seen["teacher"][0]), "teacher and student must see the identical augmented batch"

    # Which stored image each sample is a padded crop of (shuffled by the sampler), and that it was augmented.
    candidates = [
        {key: normalise(crop, CIFAR["mean"], CIFAR["std"]) for key, crop in padded_crops(p).items()} for p in pixels
    ]
    sources, outcomes = [], []
    for sample in batch.numpy():
        found = [(i, key) for i in range(8) for key, ref in candidates[i].items() if np.allclose(sample, ref, atol=1e-5)]
        assert len(found) == 1, "each sample must be one padded crop (flipped or not) of one stored image"
        sources.append(found[0][0])
        outcomes.append(found[0][1])
    assert sorted(sources) == list(range(8))
    assert any(key != (4, 4, False) for key in outcomes), "the batch must be augmented, not only normalised"

    # Independent computation of the logged terms on that batch (lr = 0 leaves the student as it was).
    log = next(h for h in trainer.state.log_history if "ce" in h)
    batch_labels = torch.tensor([labels[i] for i in sources])
    student.eval()
    with torch.no_grad():
        s = student(pixel_values=batch).logits
        t = teacher.eval()(batch)
    # float32 terms of O(1-10) logits computed two ways: a few eps (1.2e-7) of those apart however small the term
    assert log["ce"] == pytest.approx(F.cross_entropy(s, batch_labels).item(), rel=1e-4, abs=1e-6)
    reference = ltkd_loss(s, t, ClassGroups.from_counts(CLASS_COUNTS, 3).index())
    assert log["cross_group"] == pytest.approx(reference["cross_group"].item(), rel=1e-4, abs=1e-6)

    # Evaluation normalises only: eval_loss is the CE on the CPU eval transform's output, non-square images too.
    eval_images = [PILImage.fromarray(random_pixels(h, w, seed=40 + h)) for h, w in [(24, 40), (40, 24), (32, 32)]]
    evaluation = InMemoryImages.from_dataset(split_of(eval_images, [0, 3, 5]), CIFAR, train=False)
    metrics = trainer.evaluate(eval_dataset=evaluation)
    cpu = torch.stack([build_transforms(CIFAR, train=False)(image) for image in eval_images])
    with torch.no_grad():
        expected = F.cross_entropy(student(pixel_values=cpu).logits, torch.tensor([0, 3, 5])).item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_recipe_flag_trains_a_stage_from_in_memory_splits(tmp_path):
    data_args, *_, run_args, config = parse_args(
        "ltkd-distill", distill.ARGUMENTS,
        ["--in_memory_data", "true", "--imbalance_factor", "10", "--max_steps", "1",
         "--lr_decay_epochs", "none", "--per_device_train_batch_size", "16",
         "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--output_dir", str(tmp_path)],
    ).values
    assert run_args.in_memory_data and run_args.in_memory_max_gib == 8.0 and not config.device_augmentation
    data = load_long_tailed(data_args)

    def model():
        torch.manual_seed(0)
        return create_student(
            "test_convnext", num_classes=10, label_names=list(data.split_info.label_names), pretrained_cfg_overlay=CIFAR
        )

    stage = plan_stage("student_ce", cross_entropy_args(config, "student_ce"), model(), data, None, run_args)
    assert stage.args.device_augmentation and stage.in_memory_max_gib is not None
    trainer = train_stage(stage, data)
    assert isinstance(trainer.train_dataset, InMemoryImages) and trainer.train_dataset.train
    assert isinstance(trainer.eval_dataset, InMemoryImages) and not trainer.eval_dataset.train
    assert trainer.train_dataset.images.shape == (len(data.train), 3, 32, 32)
    assert trainer.state.global_step == 1 and (stage.folder / "model.safetensors").is_file()
    # the same command finds the finished stage (the settings it recorded are the command's)
    again = plan_stage("student_ce", cross_entropy_args(config, "student_ce"), model(), data, None, run_args)
    assert again.finished
    # limits are checked when the stage is planned, before anything trains
    small = RunArguments(in_memory_data=True, in_memory_max_gib=1e-6)
    with pytest.raises(ValueError, match=r"--in_memory_data true: the train and test splits .* above --in_memory_max_gib"):
        plan_stage("other", cross_entropy_args(config, "other"), model(), data, None, small)
    large = create_student("test_convnext", num_classes=10, label_names=list(data.split_info.label_names))  # 160 px
    with pytest.raises(ValueError, match=r"--in_memory_data true: the model takes input_size \(3, 160, 160\)"):
        plan_stage("other", cross_entropy_args(config, "other"), large, data, None, run_args)
    with pytest.raises(ValueError, match=r"--in_memory_max_gib must be > 0, got 0"):
        RunArguments(in_memory_data=True, in_memory_max_gib=0)


# -- (d) errors ---------------------------------------------------------------------------------------------------


def test_refuses_splits_above_the_memory_limit_before_decoding():
    split = split_of([PILImage.fromarray(random_pixels(32, 32, seed=i)) for i in range(4)], [0, 1, 2, 3])
    assert in_memory_bytes(4, CIFAR) == 4 * 3 * 32 * 32
    with pytest.raises(ValueError, match=r"split: 4 images at 3x32x32 need 12\.00 KiB as uint8, above max_bytes=12\.00 KiB\. Raise max_bytes"):
        InMemoryImages.from_dataset(split, CIFAR, train=True, max_bytes=4 * 3 * 32 * 32 - 1)
    assert len(InMemoryImages.from_dataset(split, CIFAR, train=True, max_bytes=4 * 3 * 32 * 32)) == 4
    with pytest.raises(ValueError, match=r"The splits \(train 4, test 4 images\) need .* --in_memory_max_gib"):
        in_memory_datasets({"train": split, "test": split}, CIFAR, max_bytes=5 * 3 * 32 * 32)
    splits = in_memory_datasets({"train": split, "test": split}, CIFAR)
    assert splits["train"].train and not splits["test"].train


def test_clear_errors_for_wrong_inputs():
    augment = BatchAugmentation.from_data_config(CIFAR)
    with pytest.raises(ValueError, match=r"images must be a uint8 batch \(B, 3, H, W\).*got torch\.float32"):
        augment(torch.zeros(2, 3, 32, 32), train=True)
    with pytest.raises(ValueError, match=r"must have shape \(B, 3, H, W\), got \(3, 32, 32\)"):
        augment(torch.zeros(3, 32, 32, dtype=torch.uint8), train=False)
    with pytest.raises(ValueError, match=r"images are \(24, 24\) but the model takes \(32, 32\).*resolve_data_config"):
        augment(torch.zeros(2, 3, 24, 24, dtype=torch.uint8), train=False)
    with pytest.raises(ValueError, match=r"padding must be an integer >= 0, got -1"):
        random_crop_flip(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), -1)
    with pytest.raises(ValueError, match=r"images must be a uint8 tensor .*got torch\.float32"):
        InMemoryImages(torch.zeros(2, 3, 8, 8), [0, 1], train=True)
    with pytest.raises(ValueError, match=r"labels must be N=2 integers"):
        InMemoryImages(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1, 2], train=True)
    split = split_of([PILImage.fromarray(random_pixels(32, 32, seed=0))], [0])
    with pytest.raises(ValueError, match=r"small-input \(CIFAR\) recipe.*\(3, 224, 224\).*--in_memory_data false"):
        InMemoryImages.from_dataset(split, IMAGENET_224, train=True)
    large = BatchAugmentation.from_data_config(IMAGENET_224)  # evaluation only
    assert large.padding is None and large(torch.zeros(1, 3, 224, 224, dtype=torch.uint8), train=False).shape[-1] == 224
    with pytest.raises(ValueError, match=r"small-input \(CIFAR\) training recipe.*device_augmentation=False"):
        large(torch.zeros(1, 3, 224, 224, dtype=torch.uint8), train=True)
    with pytest.raises(ValueError, match=r"split lacks columns \['image'\].*load_image_dataset"):
        InMemoryImages.from_dataset(split.rename_column("image", "img"), CIFAR, train=True)


def test_trainer_refuses_in_memory_data_it_cannot_use(tmp_path):
    split = split_of([PILImage.fromarray(random_pixels(32, 32, seed=i)) for i in range(4)], [0, 1, 2, 3])
    train = InMemoryImages.from_dataset(split, CIFAR, train=True)

    def build(dataset, **config):
        return make_trainer(make_config(tmp_path, **config), model=cifar_student(), teacher_model=cifar_teacher(),
                            train_dataset=dataset)

    with pytest.raises(ValueError, match=r"uint8 images .* only with device_augmentation=True"):
        build(train)
    evaluation = InMemoryImages.from_dataset(split, CIFAR, train=False)
    with pytest.raises(ValueError, match=r"train_dataset holds the evaluation decoding.*train=True"):
        build(evaluation, device_augmentation=True)
    with pytest.raises(ValueError, match=r"--remove_unused_columns True is not supported by DistillationTrainer"):
        build(train, device_augmentation=True, remove_unused_columns=True)
    small = InMemoryImages.from_dataset(split, dict(CIFAR, input_size=(3, 24, 24)), train=True)
    with pytest.raises(ValueError, match=r"images are \(24, 24\) but the model takes \(32, 32\)"):
        build(small, device_augmentation=True)
    # a uint8 batch reaching a trainer without the flag (e.g. through compute_loss) names the fix
    trainer = make_trainer(make_config(tmp_path), model=cifar_student(), teacher_model=cifar_teacher())
    batch = {"images": train.images, "labels": train.labels}
    with pytest.raises(ValueError, match=r"carries uint8 'images' .* device_augmentation is off.*device_augmentation=True"):
        trainer.compute_loss(trainer.model, batch)
