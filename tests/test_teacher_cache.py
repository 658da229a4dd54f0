"""The teacher-logit cache: exactly the online teacher's logits on the same augmented inputs, keyed by what they
are the logits of."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from ltkd_hf.data import BatchAugmentation, InMemoryImages, normalize_images, random_crop_flip
from ltkd_hf.teacher_cache import TeacherLogitCache, cache_key

AUG = BatchAugmentation(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), padding=4, size=(16, 16))


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = InMemoryImages(torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=g),
                            torch.tensor([0, 1, 2, 0, 1]), train=True)
    torch.manual_seed(seed)
    teacher = timm.create_model("test_resnet", num_classes=3).eval()
    return images, teacher


def online(teacher):
    @torch.no_grad()
    def logits(pixels):
        return teacher(pixels).float()
    return logits


def test_cached_logits_are_the_online_teachers_on_the_same_augmented_inputs(tmp_path):
    images, teacher = setup()
    key = cache_key(teacher, images, AUG, {"conversion": None})
    cache = TeacherLogitCache.build(tmp_path, key, images, AUG, online(teacher), batch_size=128)
    assert cache.logits.shape == (5, 162, 3) and isinstance(cache.logits, np.memmap)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):  # batches of rows drawn as training draws them
        index = torch.randint(0, 5, (7,), generator=g)
        augmented, outcome = random_crop_flip(images.images[index], 4, g, return_outcomes=True)
        expected = online(teacher)(normalize_images(augmented, AUG.mean, AUG.std))
        # float32 convolutions of batches of another size: a few eps of logits of O(1)
        torch.testing.assert_close(cache.lookup(index, outcome), expected, rtol=1e-5, atol=1e-6)


def test_a_cache_is_used_only_for_the_teacher_images_and_augmentation_it_was_made_for(tmp_path):
    images, teacher = setup()
    key = cache_key(teacher, images, AUG, {"conversion": None})
    TeacherLogitCache.build(tmp_path, key, images, AUG, online(teacher))
    assert TeacherLogitCache.open(tmp_path, key) is not None
    with torch.no_grad():
        teacher.get_classifier().weight.add_(1e-3)  # retrained teacher
    assert TeacherLogitCache.open(tmp_path, cache_key(teacher, images, AUG, {"conversion": None})) is None
    other = InMemoryImages(images.images.flip(0), images.labels, train=True)  # other rows / order
    assert cache_key(teacher, other, AUG, {"conversion": None})["images"] != key["images"]
    assert TeacherLogitCache.open(tmp_path / "none", key) is None
    wider = BatchAugmentation(AUG.mean, AUG.std, padding=2, size=AUG.size)
    assert cache_key(teacher, images, wider, None)["outcomes"] == 50
    with pytest.raises(ValueError, match="infinitely many outcomes"):
        cache_key(teacher, images, BatchAugmentation(AUG.mean, AUG.std, padding=None, size=(224, 224)), None)
