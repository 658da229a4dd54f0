"""The teacher-logit cache: exactly the online teacher's logits on the same augmented inputs, filled as they are
drawn, keyed by what they are the logits of."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from ltkd_hf.data import BatchAugmentation, InMemoryImages, normalize_images, random_crop_flip
from ltkd_hf.data.in_memory import crop_flip
from ltkd_hf.teacher_cache import FILLED_NAME, LOGITS_NAME, TeacherLogitCache, cache_key

AUG = BatchAugmentation(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), padding=4, size=(16, 16))


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = InMemoryImages(torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=g),
                            torch.tensor([0, 1, 2, 0, 1]), train=True)
    torch.manual_seed(seed)
    teacher = timm.create_model("test_resnet", num_classes=3).eval()
    return images, teacher


class Online:
    """The frozen teacher on normalised pixels, counting the rows it is run on."""

    def __init__(self, teacher):
        self.teacher, self.rows = teacher, 0

    @torch.no_grad()
    def __call__(self, pixels):
        self.rows += len(pixels)
        return self.teacher(pixels).float()


def draw(images, g, size=7):
    """A training batch: rows and their augmented, normalised pixels, drawn as training draws them."""
    index = torch.randint(0, len(images), (size,), generator=g)
    augmented, outcome = random_crop_flip(images.images[index], 4, g, return_outcomes=True)
    return index, outcome, normalize_images(augmented, AUG.mean, AUG.std)


def test_the_teacher_runs_once_per_drawn_row_and_the_cache_returns_its_logits(tmp_path):
    images, teacher = setup()
    key = cache_key(teacher, images, AUG, {"conversion": None})
    cache = TeacherLogitCache.create(tmp_path, key, num_classes=3)
    assert cache.logits.shape == (5, 162, 3) and isinstance(cache.logits, np.memmap) and cache.filled_fraction() == 0
    online, g = Online(teacher), torch.Generator().manual_seed(1)
    batches = [draw(images, g) for _ in range(3)]
    batches.append(batches[0])  # rows drawn again later in the run
    for index, outcome, pixels in batches:
        expected = Online(teacher)(pixels)
        # float32 convolutions of batches of another size: a few eps of logits of O(1)
        torch.testing.assert_close(cache.lookup(index, outcome, pixels, online), expected, rtol=1e-5, atol=1e-6)
    distinct = {(i, o) for index, outcome, _ in batches for i, o in zip(index.tolist(), outcome.tolist())}
    assert online.rows == len(distinct) == 21 and cache.hits == 7  # the repeated batch is answered from the cache
    assert int(cache.filled.sum()) == len(distinct)

    # Another run drawing the same rows (same seed): answered from the cache, the teacher never runs; a batch
    # with one new row runs the teacher on that row only.
    reopened, again = TeacherLogitCache.open(tmp_path, key), Online(teacher)
    for index, outcome, pixels in batches:
        torch.testing.assert_close(reopened.lookup(index, outcome, pixels, again), Online(teacher)(pixels),
                                   rtol=1e-5, atol=1e-6)
    assert again.rows == 0 and reopened.hits == reopened.lookups == 28
    index, outcome, pixels = batches[0]
    new = next(o for o in range(162) if (int(index[0]), o) not in distinct)
    outcome = outcome.clone()
    outcome[0] = new
    pixels = normalize_images(crop_flip(images.images[index], 4, outcome), AUG.mean, AUG.std)
    torch.testing.assert_close(reopened.lookup(index, outcome, pixels, again), Online(teacher)(pixels),
                               rtol=1e-5, atol=1e-6)
    assert again.rows == 1


def test_a_cache_is_used_only_for_the_teacher_images_and_augmentation_it_was_made_for(tmp_path):
    images, teacher = setup()
    key = cache_key(teacher, images, AUG, {"conversion": None})
    TeacherLogitCache.create(tmp_path, key, num_classes=3)
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


def test_a_cache_replaced_by_another_runs_key_while_it_opens_is_not_used(tmp_path, monkeypatch):
    """Two runs from one teacher with other splits share its cache folder: one opened its key, then mapped the
    arrays the other had just created for its own key, and filled them with its logits, which the other then read
    as its own (measured by a 2-process race: tens of rows marked filled holding zeros)."""
    images, teacher = setup()
    mine = cache_key(teacher, images, AUG, {"conversion": None})
    theirs = {**mine, "images": "another split"}
    TeacherLogitCache.create(tmp_path, mine, num_classes=3)
    load = np.load

    def raced(path, *args, **kwargs):  # the other run creates its cache just before this one maps the arrays
        monkeypatch.setattr(np, "load", load)
        TeacherLogitCache.create(tmp_path, theirs, num_classes=3)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", raced)
    assert TeacherLogitCache.open(tmp_path, mine) is None
    assert TeacherLogitCache.open(tmp_path, theirs) is not None


def test_a_truncated_array_is_damage_not_zero_logits(tmp_path, caplog):
    """Mapping a short .npy file for writing pads it with zeros: a truncated logits.npy was reused, and its lost rows,
    still marked filled, came back as all-zero teacher logits."""
    images, teacher = setup()
    key = cache_key(teacher, images, AUG, {"conversion": None})
    cache = TeacherLogitCache.create(tmp_path, key, num_classes=3)
    index, outcome, pixels = draw(images, torch.Generator().manual_seed(1))
    cache.lookup(index, outcome, pixels, Online(teacher))
    del cache
    logits = tmp_path / LOGITS_NAME
    size = logits.stat().st_size
    with open(logits, "r+b") as file:
        file.truncate(size - 100)
    with caplog.at_level("WARNING", logger="ltkd_hf"):
        assert TeacherLogitCache.open(tmp_path, key) is None
    assert logits.stat().st_size == size - 100  # not padded back
    assert f"is damaged (logits.npy holds {size - 100} of its {size} bytes): creating it anew" in caplog.text
    fresh = TeacherLogitCache.create(tmp_path, key, num_classes=3)
    assert fresh.filled_fraction() == 0 and logits.stat().st_size == size
    (tmp_path / FILLED_NAME).unlink()  # a file lost: made anew as before, and now the log says why
    with caplog.at_level("WARNING", logger="ltkd_hf"):
        assert TeacherLogitCache.open(tmp_path, key) is None
    assert "cannot be read (FileNotFoundError:" in caplog.text
