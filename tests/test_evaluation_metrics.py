import json
import math

import numpy as np
import pytest

from ltkd_hf import ClassGroups
from ltkd_hf.evaluation import evaluation_report, group_accuracy, group_mass, per_class_accuracy, top1_accuracy


# -- plain-loop references ---------------------------------------------------------------------------
def loop_group_accuracy(preds, refs, class_to_group, names):
    out = {}
    hits = sum(1 for p, r in zip(preds, refs) if p == r)
    out["accuracy"] = hits / len(refs)
    for g, name in enumerate(names):
        seen = right = 0
        for p, r in zip(preds, refs):
            if class_to_group[r] == g:
                seen += 1
                right += p == r
        out[f"accuracy_{name}"] = right / seen if seen else math.nan
    return out


def loop_per_class(preds, refs, num_classes):
    out = []
    for c in range(num_classes):
        seen = [p == r for p, r in zip(preds, refs) if r == c]
        out.append(sum(seen) / len(seen) if seen else math.nan)
    return out


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=0, abs_tol=1e-12)


def random_case(seed, c=17, n=300):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 300, size=c).tolist()
    refs = rng.integers(0, c, size=n)
    # Correct more often for frequent classes, as a biased model would be.
    p_right = np.asarray(counts)[refs] / max(counts)
    preds = np.where(rng.random(n) < p_right, refs, rng.integers(0, c, size=n))
    return counts, preds, refs


# -- group_accuracy / per_class_accuracy -------------------------------------------------------------
@pytest.mark.parametrize("seed,k", [(0, 3), (1, 4), (2, 1), (3, 17)])
def test_group_accuracy_matches_loop(seed, k):
    counts, preds, refs = random_case(seed)
    groups = ClassGroups.from_counts(counts, k)
    got = group_accuracy(preds, refs, groups)
    want = loop_group_accuracy(preds.tolist(), refs.tolist(), groups.class_to_group, groups.names)
    assert list(got) == list(want)
    for key in want:
        assert same(got[key], want[key]), key
        assert math.isnan(got[key]) or 0.0 <= got[key] <= 1.0


def test_group_accuracy_small_hand_case_and_lists_equal_arrays():
    groups = ClassGroups((0, 0, 1, 2), ("head", "medium", "tail"))
    preds = [0, 1, 0, 2, 3, 0]
    refs = [0, 1, 1, 2, 3, 3]  # head: 3 samples, 2 right; medium: 1 of 1; tail: 1 of 2
    got = group_accuracy(preds, refs, groups)
    assert got == {"accuracy": 4 / 6, "accuracy_head": 2 / 3, "accuracy_medium": 1.0, "accuracy_tail": 0.5}
    assert group_accuracy(np.array(preds, dtype=np.int32), np.array(refs, dtype=np.uint8), groups) == got


def test_group_without_test_samples_is_nan():
    groups = ClassGroups((0, 1, 2), ("head", "medium", "tail"))
    got = group_accuracy([0, 1, 0], [0, 1, 1], groups)
    assert math.isnan(got["accuracy_tail"]) and got["accuracy_medium"] == 0.5


def test_on_balanced_test_set_group_accuracy_is_mean_of_class_accuracies():
    rng = np.random.default_rng(5)
    c, per_class = 12, 25
    refs = np.repeat(np.arange(c), per_class)
    preds = np.where(rng.random(refs.size) < 0.6, refs, rng.integers(0, c, refs.size))
    groups = ClassGroups.from_counts(rng.integers(1, 100, c).tolist(), 3)
    got = group_accuracy(preds, refs, groups)
    per_class = loop_per_class(preds.tolist(), refs.tolist(), c)
    for g, name in enumerate(groups.names):
        classes = [i for i in range(c) if groups.class_to_group[i] == g]
        assert math.isclose(got[f"accuracy_{name}"], sum(per_class[i] for i in classes) / len(classes))


@pytest.mark.parametrize("seed", [0, 7])
def test_per_class_accuracy_matches_loop(seed):
    _, preds, refs = random_case(seed, c=40, n=120)  # some classes absent from refs
    got = per_class_accuracy(preds, refs, 40)
    want = loop_per_class(preds.tolist(), refs.tolist(), 40)
    assert got.shape == (40,)
    assert any(math.isnan(w) for w in want)
    assert all(same(g, w) for g, w in zip(got.tolist(), want))


def test_top1_accuracy():
    assert top1_accuracy([3, 1, 2, 2], [3, 0, 2, 1]) == 0.5


# -- evaluation_report ---------------------------------------------------------------------------------
def test_evaluation_report_matches_loops_and_is_strict_json():
    c = 30
    counts = [int(500 * 100 ** (-i / (c - 1))) for i in range(c)]  # 500 ... 5: all three threshold groups
    rng = np.random.default_rng(11)
    refs = rng.integers(0, c - 1, size=400)  # the last class has no test sample
    preds = np.where(rng.random(400) < 0.7, refs, rng.integers(0, c, 400))
    report = evaluation_report(preds, refs, class_counts=counts)

    paper = ClassGroups.from_counts(counts, 3)
    want = loop_group_accuracy(preds.tolist(), refs.tolist(), paper.class_to_group, paper.names)
    for key in ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail"):
        assert math.isclose(report[key], want[key]), key

    # The literature's thresholds, written out: many > 100, medium 20..100, few < 20.
    thr = [0 if n > 100 else (1 if n >= 20 else 2) for n in counts]
    want_thr = loop_group_accuracy(preds.tolist(), refs.tolist(), thr, ("many", "medium", "few"))
    assert set(report["threshold_accuracy"]) == {"accuracy_many", "accuracy_medium", "accuracy_few"}
    for key, value in report["threshold_accuracy"].items():
        assert math.isclose(value, want_thr[key]), key
    assert report["threshold_groups"]["class_to_group"] == thr
    assert report["threshold_groups"]["many"] == 100 and report["threshold_groups"]["few"] == 20

    per_class = loop_per_class(preds.tolist(), refs.tolist(), c)
    assert report["per_class"][-1] is None
    assert all(math.isclose(a, b) for a, b in zip(report["per_class"][:-1], per_class[:-1]))
    assert report["groups"]["names"] == ["head", "medium", "tail"]
    assert report["groups"]["sizes"] == [sum(1 for g in paper.class_to_group if g == k) for k in range(3)]
    assert report["num_samples"] == 400 and report["class_counts"] == counts

    text = json.dumps(report, allow_nan=False)  # raises if a NaN slipped through
    assert json.loads(text) == report


def test_evaluation_report_other_group_count():
    counts = list(range(100, 0, -10))
    report = evaluation_report(list(range(10)), list(range(10)), class_counts=counts, num_groups=5)
    assert [k for k in report if k.startswith("accuracy_")] == [f"accuracy_group_{g}" for g in range(5)]
    assert all(report[f"accuracy_group_{g}"] == 1.0 for g in range(5))


# -- group_mass -----------------------------------------------------------------------------------------
def test_group_mass_matches_loop_and_batch_scale():
    rng = np.random.default_rng(3)
    c, n = 9, 50
    probs = rng.dirichlet(np.ones(c), size=n)
    groups = ClassGroups.from_counts([90, 80, 70, 60, 50, 40, 30, 20, 10], 3)
    want = [0.0] * 3
    for row in probs.tolist():
        for cls, p in enumerate(row):
            want[groups.class_to_group[cls]] += p / n
    got = group_mass(probs, groups)
    assert got.shape == (3,)
    assert np.allclose(got, want, atol=1e-12)
    assert math.isclose(got.sum(), 1.0)
    assert np.allclose(group_mass(probs.tolist(), groups, batch_size=64), np.asarray(want) * 64, atol=1e-10)


# -- bad input ------------------------------------------------------------------------------------------
GROUPS = ClassGroups((0, 1, 2), ("head", "medium", "tail"))


@pytest.mark.parametrize(
    "preds,refs,match",
    [
        ([0, 1], [0, 1, 2], "same length, got 2 predictions and 3 references"),
        ([], [], "predictions is empty"),
        ([0, 3], [0, 1], r"predictions holds class indices \[3\] outside 0..2"),
        ([0, 1], [-1, 1], r"references holds class indices \[-1\] outside 0..2"),
        ([0.0, 1.0], [0, 1], "predictions must hold integer class indices, got dtype float64"),
        ([[0.1, 0.9, 0.0]], [1], r"predictions must be a 1-D sequence .* shape \(1, 3\).*argmax"),
    ],
)
def test_bad_labels_raise_for_a_person(preds, refs, match):
    with pytest.raises(ValueError, match=match):
        group_accuracy(preds, refs, GROUPS)


def test_bad_arguments_of_the_other_functions():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        per_class_accuracy([0], [0], 0)
    with pytest.raises(ValueError, match=r"outside 0..1"):
        per_class_accuracy([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match=r"outside 0..2"):
        evaluation_report([0, 5], [0, 1], class_counts=[10, 5, 1])
    with pytest.raises(ValueError, match="references is empty"):
        top1_accuracy([1], [])
    with pytest.raises(ValueError, match=r"C = 3 .* got shape \(2, 4\)"):
        group_mass(np.full((2, 4), 0.25), GROUPS)
    with pytest.raises(ValueError, match="sum to 1.*pass softmax"):
        group_mass(np.array([[2.0, -1.0, 0.5]]), GROUPS)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        group_mass(np.full((1, 3), 1 / 3), GROUPS, batch_size=0)
