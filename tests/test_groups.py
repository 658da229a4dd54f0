import numpy as np
import pytest
import torch

from ltkd_hf import ClassGroups


def reference_groups(counts, k):
    """Plain-loop reference: sort by count (desc, ties by index), cut into blocks."""
    c = len(counts)
    order = sorted(range(c), key=lambda i: (-counts[i], i))
    if k == 3:
        outer = max(1, round(0.33 * c))
        sizes = [outer, c - 2 * outer, outer]
    else:
        sizes = [c // k + (1 if g < c % k else 0) for g in range(k)]
    out, pos = [None] * c, 0
    for g, s in enumerate(sizes):
        for cls in order[pos : pos + s]:
            out[cls] = g
        pos += s
    return out


def test_k3_is_paper_split_on_cifar100():
    counts = [int(500 * 100 ** (-c / 99)) for c in range(100)]
    groups = ClassGroups.from_counts(counts, 3)
    assert groups.sizes == [33, 34, 33]
    assert groups.names == ("head", "medium", "tail")
    assert groups.class_to_group[:33] == (0,) * 33 and groups.class_to_group[-33:] == (2,) * 33


@pytest.mark.parametrize("c,k", [(10, 3), (100, 4), (100, 7), (37, 5), (100, 100), (10, 1), (1000, 3)])
def test_matches_loop_reference_on_shuffled_counts(c, k):
    rng = np.random.default_rng(c * 31 + k)
    counts = rng.integers(1, 50, size=c).tolist()  # many ties
    groups = ClassGroups.from_counts(counts, k)
    assert list(groups.class_to_group) == reference_groups(counts, k)
    assert sum(groups.sizes) == c and groups.num_groups == k


def test_index_is_long_tensor_and_dict_round_trip():
    groups = ClassGroups.from_counts([5, 9, 1, 7, 3, 3], 3)
    idx = groups.index()
    assert idx.dtype == torch.long and idx.tolist() == list(groups.class_to_group)
    again = ClassGroups.from_dict(groups.to_dict())
    assert again == groups
    assert groups.classes_of("head") == [1, 3]


def test_groups_are_labelled_with_their_class_counts_in_words():
    assert ClassGroups.from_counts([9, 7, 5, 3, 1], num_groups=3).labelled() == [
        "head (2 classes)", "medium (1 class)", "tail (2 classes)"]  # it said "medium (1 classes)"


def test_threshold_groups():
    groups = ClassGroups.by_threshold([500, 101, 100, 20, 19, 5])
    assert groups.names == ("many", "medium", "few")
    assert list(groups.class_to_group) == [0, 0, 1, 1, 2, 2]
    only_many = ClassGroups.by_threshold([500, 200])
    assert only_many.names == ("many",) and only_many.sizes == [2]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(class_counts=[1, 2, 3], num_groups=4), "num_groups must be an integer in 1..3"),
        (dict(class_counts=[1, 2, 3], num_groups=0), "num_groups"),
        (dict(class_counts=[], num_groups=1), "class_counts must be a non-empty"),
        (dict(class_counts=[1, -2, 3], num_groups=1), "non-negative"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassGroups.from_counts(**kwargs)


def test_bad_dict():
    with pytest.raises(ValueError, match="outside 0..1"):
        ClassGroups((0, 2), ("a", "b"))
    with pytest.raises(ValueError, match="missing keys"):
        ClassGroups.from_dict({"names": ["a"]})
