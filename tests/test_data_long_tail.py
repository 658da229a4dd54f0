"""Long-tailed splits: counts against the published totals and a loop of the formula, the selected rows
against the LDAM-DRW procedure written out here, the record ImageSplits keeps of the construction, bad input."""

import json
import math

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from ltkd_hf import ClassGroups
from ltkd_hf.data import ImageSplits, SplitInfo, get_class_counts, long_tailed_counts, make_long_tailed


def ldam_counts(img_max, num_classes, rho, denominator=None):
    """IMBALANCECIFAR.get_img_num_per_cls of LDAM-DRW, 'exp' branch."""
    denominator = num_classes - 1.0 if denominator is None else denominator
    imb_factor = 1.0 / rho
    return [int(img_max * (imb_factor ** (c / denominator))) for c in range(num_classes)]


def ldam_select(labels, img_num_per_cls, seed):
    """IMBALANCECIFAR.gen_imbalanced_data of LDAM-DRW: global legacy seed, np.where, shuffle, keep first n."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        targets_np = np.array(labels, dtype=np.int64)
        selected = []
        for the_class, the_img_num in zip(np.unique(targets_np), img_num_per_cls):
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            selected.extend(idx[:the_img_num].tolist())
        return selected
    finally:
        np.random.set_state(state)


def balanced(num_classes=10, per_class=50, shuffle_seed=1, names=True):
    """Rows with an ``idx`` column (the original row number) and labels in a shuffled order."""
    labels = np.random.RandomState(shuffle_seed).permutation(np.repeat(np.arange(num_classes), per_class))
    label_feature = ClassLabel(names=[f"c{i}" for i in range(num_classes)]) if names else Value("int64")
    features = Features({"idx": Value("int64"), "label": label_feature})
    return Dataset.from_dict({"idx": np.arange(labels.size), "label": labels}, features=features)


# -- counts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "num_classes, per_class, rho, total",
    [(100, 500, 100, 10_847), (100, 500, 20, 15_907), (100, 500, 10, 19_573), (10, 5000, 100, 12_406)],
)
def test_counts_reproduce_published_cifar_lt_totals(num_classes, per_class, rho, total):
    counts = long_tailed_counts([per_class] * num_classes, rho)
    assert sum(counts) == total
    assert counts == ldam_counts(per_class, num_classes, rho)
    assert counts[0] == per_class


@pytest.mark.parametrize("num_classes, per_class", [(200, 500), (1000, 1300), (100, 500), (10, 5000)])
@pytest.mark.parametrize("rho", [5, 10, 20, 50, 100, 256])
def test_counts_equal_the_ldam_drw_loop_in_every_setting(num_classes, per_class, rho):
    assert long_tailed_counts([per_class] * num_classes, rho) == ldam_counts(per_class, num_classes, rho)


def test_cifar100_rho100_ends_at_5():
    counts = long_tailed_counts([500] * 100, 100)
    assert counts[-1] == 5 and all(a >= b for a, b in zip(counts, counts[1:]))


def test_paper_exponent_uses_c_over_C_with_per_class_source_counts():
    source = [30, 40, 50, 60, 70]
    expected = [int(n * 8.0 ** (-c / 5)) for c, n in enumerate(source)]
    assert long_tailed_counts(source, 8, exponent="paper") == expected
    assert long_tailed_counts(source, 8) == [int(n * (1 / 8.0) ** (c / 4)) for c, n in enumerate(source)]


def test_step_profile_halves_at_C_over_2():
    assert long_tailed_counts([100] * 5, 10, profile="step") == [100, 100, 10, 10, 10]
    assert long_tailed_counts([100] * 4, 4, profile="step") == [100, 100, 25, 25]


def test_rho_one_keeps_every_image():
    assert long_tailed_counts([7, 9, 11], 1) == [7, 9, 11]


def test_class_that_would_get_zero_is_clamped_to_one_with_warning():
    with pytest.warns(UserWarning, match=r"classes \[3, 4\] with 0 images; each keeps 1"):
        counts = long_tailed_counts([10] * 5, 100)
    # int(10 * 100**(-c/4)) = 10, 3, 1, 0 (0.32), 0 (0.1)
    assert counts == [10, 3, 1, 1, 1]


def test_clamped_classes_keep_their_first_shuffled_row():
    ds = balanced(num_classes=5, per_class=10)
    with pytest.warns(UserWarning, match=r"classes \['c3', 'c4'\] with 0 images; each keeps 1"):  # by name
        lt = make_long_tailed(ds, 100)
    assert get_class_counts(lt) == [10, 3, 1, 1, 1]
    assert lt["idx"][:] == ldam_select(ds["label"][:], [10, 3, 1, 1, 1], 0)


@pytest.mark.parametrize("rho", [0.5, 0, -3, math.inf, math.nan, "10", True, None])
def test_bad_imbalance_factor(rho):
    with pytest.raises(ValueError, match="imbalance_factor must be a finite number >= 1"):
        long_tailed_counts([10, 10], rho)
    with pytest.raises(ValueError, match="imbalance_factor"):
        make_long_tailed(balanced(), rho)


def test_bad_profile_exponent_and_counts():
    with pytest.raises(ValueError, match="profile must be one of"):
        long_tailed_counts([10, 10], 2, profile="linear")
    with pytest.raises(ValueError, match="exponent must be one of"):
        long_tailed_counts([10, 10], 2, exponent="C")
    with pytest.raises(ValueError, match=r"classes \[1\] have no images"):
        long_tailed_counts([10, 0, 5], 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        long_tailed_counts([10], 2)
    with pytest.raises(ValueError, match="must be integers"):
        long_tailed_counts([10.5, 3.0], 2)


# -- selection ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rho, seed", [(10, 0), (50, 0), (5, 3)])
def test_selected_rows_match_ldam_drw(rho, seed):
    ds = balanced(num_classes=10, per_class=50)
    labels = ds["label"][:]
    lt = make_long_tailed(ds, rho, seed=seed)
    expected_counts = ldam_counts(50, 10, rho)
    assert lt["idx"][:] == ldam_select(labels, expected_counts, seed)
    assert get_class_counts(lt) == expected_counts
    assert np.bincount(lt["label"][:], minlength=10).tolist() == expected_counts
    # Rows are unchanged: the label of every kept row is its original label.
    assert [labels[i] for i in lt["idx"][:]] == lt["label"][:]


def test_selection_is_deterministic_and_seed_dependent():
    ds = balanced()
    first, again, other = (make_long_tailed(ds, 10, seed=s)["idx"][:] for s in (0, 0, 1))
    assert first == again
    assert first != other
    assert sorted(np.asarray(ds["label"][:])[first]) == sorted(np.asarray(ds["label"][:])[other])


def test_unequal_source_counts_use_each_class_own_count():
    labels = np.repeat(np.arange(4), [40, 10, 30, 20])
    ds = Dataset.from_dict({"idx": np.arange(labels.size), "label": labels})
    lt = make_long_tailed(ds, 4)
    expected = [int(n * (1 / 4.0) ** (c / 3)) for c, n in enumerate([40, 10, 30, 20])]
    assert get_class_counts(lt) == expected
    assert lt["idx"][:] == ldam_select(labels, expected, 0)


def test_class_order_seed_permutes_frequency_ranks_without_renaming_labels():
    ds = balanced(num_classes=10, per_class=50)
    lt = make_long_tailed(ds, 10, class_order_seed=7)
    rank = np.random.RandomState(7).permutation(10)
    expected = [int(50 * (1 / 10.0) ** (rank[c] / 9)) for c in range(10)]
    assert get_class_counts(lt) == expected
    assert lt["idx"][:] == ldam_select(ds["label"][:], expected, 0)
    assert expected != sorted(expected, reverse=True)  # the head is no longer class 0
    assert lt.features["label"].names == ds.features["label"].names


def test_step_profile_selection():
    ds = balanced(num_classes=4, per_class=20)
    lt = make_long_tailed(ds, 5, profile="step", seed=2)
    assert get_class_counts(lt) == [20, 20, 4, 4]
    assert lt["idx"][:] == ldam_select(ds["label"][:], [20, 20, 4, 4], 2)


def test_other_label_column_and_plain_integer_labels():
    ds = balanced(names=False).rename_column("label", "fine_label")
    lt = make_long_tailed(ds, 10, label_column="fine_label")
    expected = ldam_counts(50, 10, 10)
    assert get_class_counts(lt, label_column="fine_label") == expected
    assert lt["idx"][:] == ldam_select(ds["fine_label"][:], expected, 0)


def test_source_dataset_is_left_untouched():
    ds = balanced()
    ds.info.description = "source text"
    make_long_tailed(ds, 10)
    assert ds.info.description == "source text" and len(ds) == 500


def test_long_tail_of_a_selected_view_uses_its_rows():
    base = balanced(num_classes=5, per_class=40)
    view = base.select(range(100, 200))  # an indices mapping over the base table
    labels = view["label"][:]
    source_counts = np.bincount(labels, minlength=5).tolist()
    lt = make_long_tailed(view, 3)
    expected = [int(n * (1 / 3.0) ** (c / 4)) for c, n in enumerate(source_counts)]
    assert get_class_counts(lt) == expected
    positions = ldam_select(labels, expected, 0)
    assert lt["idx"][:] == [view["idx"][:][p] for p in positions]


# -- the record: ImageSplits.split_info -----------------------------------------------------------
def test_long_tailed_splits_record_the_construction_and_reach_class_groups():
    ds = balanced(num_classes=9, per_class=30)
    splits = ImageSplits({"train": ds, "test": ds}, SplitInfo.from_dataset(ds))
    lt = splits.long_tailed(10, seed=4, class_order_seed=7)
    rank = np.random.RandomState(7).permutation(9)
    expected = [int(30 * (1 / 10.0) ** (rank[c] / 8)) for c in range(9)]
    assert lt.split_info.class_counts == tuple(expected) == tuple(get_class_counts(lt["train"]))
    assert lt["train"]["idx"][:] == ldam_select(ds["label"][:], expected, 4)
    assert lt.split_info.long_tail == {"imbalance_factor": 10.0, "seed": 4, "profile": "exp", "exponent": "standard",
                                       "class_order_seed": 7}
    assert lt["test"] is ds and splits["train"] is ds and splits.split_info.long_tail is None  # the input is untouched
    assert "imbalance factor 10, frequency ranks drawn with class_order_seed 7" in lt.split_info.describe()
    assert "LT seed 4" in lt.split_info.describe()
    # imbalance factor 1 keeps every image: nothing is made the head, and the description must not say so
    kept = splits.long_tailed(1, seed=4).split_info
    assert kept.class_counts == splits.split_info.class_counts
    assert kept.describe() == ("every training image kept (imbalance factor 1: the source's own class counts, "
                               "30 to 30 images per class (n_max / n_min 1))")
    assert lt.split_info.describe().endswith(f": {max(expected)} to {min(expected)} images per class "
                                             f"(n_max / n_min {max(expected) / min(expected):.3g})")
    assert lt.split_info.groups(3) == ClassGroups.from_counts(expected, 3)
    with pytest.raises(ValueError, match="imbalance_factor must be a finite number >= 1"):
        splits.long_tailed(0.5)
    # numpy numbers are recorded as Python ones: the record is written to JSON in every saved folder
    numpy_args = splits.long_tailed(np.float64(10), seed=np.int64(4), class_order_seed=np.int64(7)).split_info
    assert json.loads(json.dumps(numpy_args.to_dict())) == json.loads(json.dumps(lt.split_info.to_dict()))


def test_rho_on_a_source_of_unequal_classes_states_the_counts_it_made():
    """rho 2 on a folder that was already long-tailed made n_max / n_min 7 with class 3 the largest, while the card
    said "imbalance factor 2, class 0 is the head"."""
    rows = [c for c, n in enumerate([6, 5, 8, 12, 2, 3]) for _ in range(n)]
    ds = Dataset.from_dict({"label": rows, "idx": list(range(len(rows)))},
                           features=Features({"label": ClassLabel(names=list("abcdef")), "idx": Value("int64")}))
    info = ImageSplits({"train": ds, "test": ds}, SplitInfo.from_dataset(ds)).long_tailed(2, seed=0).split_info
    expected = [int(n * 2 ** (-c / 5)) for c, n in enumerate([6, 5, 8, 12, 2, 3])]  # [6, 4, 6, 7, 1, 1]
    assert info.class_counts == tuple(expected)
    text = info.describe()
    assert "class 0 is the head" not in text
    assert "the source's unequal counts make class 3 (d) the largest" in text
    assert text.endswith(": 7 to 1 images per class (n_max / n_min 7)")


def test_a_split_passed_without_its_record_says_so():
    """A bare dataset carries no construction: its SplitInfo has counts and names, and its description says the
    construction is not recorded rather than claiming the rows were used as they are."""
    lt = make_long_tailed(balanced(), 10)
    info = SplitInfo.from_dataset(lt)
    assert info.class_counts == tuple(ldam_counts(50, 10, 10)) and info.long_tail is None
    assert info.describe().startswith("not recorded")


def test_get_class_counts_of_a_plain_dataset_counts_every_class():
    ds = Dataset.from_dict({"label": [2, 2, 0]}, features=Features({"label": ClassLabel(names=["a", "b", "c", "d"])}))
    assert get_class_counts(ds) == [1, 0, 2, 0]


# -- bad datasets -------------------------------------------------------------------------------------
def test_missing_label_column_names_the_columns():
    with pytest.raises(ValueError, match=r"label_column='target' is not a column.*\['idx', 'label'\]"):
        make_long_tailed(balanced(), 10, label_column="target")


def test_empty_dataset():
    with pytest.raises(ValueError, match="the dataset is empty"):
        make_long_tailed(balanced().select([]), 10)


def test_labels_outside_class_range():
    features = Features({"label": ClassLabel(names=["a", "b"])})
    with pytest.raises(ValueError, match=r"values \[-1\] outside 0..1.*filter them out"):
        make_long_tailed(Dataset.from_dict({"label": [0, 1, -1]}, features=features), 2)
    with pytest.raises(ValueError, match=r"classes \[1\] have no images"):
        make_long_tailed(Dataset.from_dict({"label": [0, 0, 2, 2]}), 2)


def test_non_integer_labels():
    with pytest.raises(ValueError, match="holds string values.*class_encode_column"):
        make_long_tailed(Dataset.from_dict({"label": ["a", "b"]}), 2)
    with pytest.raises(ValueError, match="holds 1 missing values"):
        make_long_tailed(Dataset.from_dict({"label": [0, None, 1]}), 2)


def test_dataset_dict_is_refused_with_hint():
    with pytest.raises(ValueError, match=r"got DatasetDict\. Pass one split"):
        make_long_tailed(DatasetDict(train=balanced()), 10)
