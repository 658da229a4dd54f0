import json
import math

import numpy as np
import pytest

from ltkd_hf import ClassGroups
from ltkd_hf.evaluation import (
    evaluation_report,
    expected_calibration_error,
    group_accuracy,
    group_mass,
    per_class_accuracy,
    top1_accuracy,
)


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


def loop_ece(probs, labels, bins):
    """Guo et al. (2017): bin m holds confidences in ((m-1)/M, m/M]; sum of |B_m|/n * |acc(B_m) - conf(B_m)|."""
    rows = [(max(row), row.index(max(row)) == label) for row, label in zip(probs, labels)]
    total = 0.0
    for m in range(1, bins + 1):
        members = [(conf, right) for conf, right in rows if (m - 1) / bins < conf <= m / bins]
        if members:
            acc = sum(right for _, right in members) / len(members)
            conf = sum(c for c, _ in members) / len(members)
            total += len(members) / len(rows) * abs(acc - conf)
    return total


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
    for name in ("many", "medium", "few"):
        assert math.isclose(report[f"accuracy_{name}_shot"], want_thr[f"accuracy_{name}"]), name
    assert report["threshold_groups"]["class_to_group"] == thr
    assert report["threshold_groups"]["many"] == 100 and report["threshold_groups"]["few"] == 20

    per_class = loop_per_class(preds.tolist(), refs.tolist(), c)
    assert report["per_class"][-1] is None
    assert all(math.isclose(a, b) for a, b in zip(report["per_class"][:-1], per_class[:-1]))
    assert report["groups"]["names"] == ["head", "medium", "tail"]
    assert report["groups"]["sizes"] == [sum(1 for g in paper.class_to_group if g == k) for k in range(3)]
    assert report["num_samples"] == 400 and report["class_counts"] == counts
    assert report["test_counts"] == [sum(1 for r in refs.tolist() if r == k) for k in range(c)]

    text = json.dumps(report, allow_nan=False)  # raises if a NaN slipped through
    assert json.loads(text) == report


def test_evaluation_report_other_group_count():
    counts = list(range(100, 0, -10))
    report = evaluation_report(list(range(10)), list(range(10)), class_counts=counts, num_groups=5)
    paper_keys = [k for k in report if k.startswith("accuracy_") and not k.endswith("_shot")]
    assert paper_keys == [f"accuracy_group_{g}" for g in range(5)]
    assert all(report[f"accuracy_group_{g}"] == 1.0 for g in range(5))


def test_shot_groups_use_the_exact_thresholds():
    # One class at each side of both thresholds: 101 is many-shot, 100 and 20 medium-shot, 19 few-shot.
    counts = [101, 100, 20, 19]
    refs = [0, 0, 1, 1, 2, 2, 3, 3]
    preds = [0, 0, 1, 0, 2, 2, 0, 0]  # class 0: 2/2, class 1: 1/2, class 2: 2/2, class 3: 0/2
    report = evaluation_report(preds, refs, class_counts=counts)
    assert report["accuracy_many_shot"] == 1.0
    assert report["accuracy_medium_shot"] == 3 / 4
    assert report["accuracy_few_shot"] == 0.0
    assert report["threshold_groups"]["sizes"] == [1, 2, 1]
    # Without a class under 20 images there is no few-shot group: null, not a number.
    assert evaluation_report([0, 1, 2], [0, 1, 2], class_counts=[300, 200, 40])["accuracy_few_shot"] is None


# -- expected calibration error ----------------------------------------------------------------------
@pytest.mark.parametrize("seed,bins", [(0, 15), (1, 10), (2, 1), (3, 15)])
def test_ece_matches_loop(seed, bins):
    rng = np.random.default_rng(seed)
    c, n = 7, 400
    probs = rng.dirichlet(np.full(c, 0.3), size=n)
    labels = np.where(rng.random(n) < 0.6, probs.argmax(1), rng.integers(0, c, n))
    want = loop_ece(probs.tolist(), labels.tolist(), bins)
    # Sums of 400 float64 terms: agreement to rounding, with a floor for an ECE near 0.
    assert math.isclose(expected_calibration_error(probs, labels, bins), want, rel_tol=1e-9, abs_tol=1e-12)
    # float32 softmax, as the trainer gives it: the same up to float32 rounding of the confidences.
    got32 = expected_calibration_error(probs.astype(np.float32), labels, bins)
    assert math.isclose(got32, want, rel_tol=1e-5, abs_tol=1e-6)


def test_ece_of_calibrated_predictions_is_zero():
    # Confidence 0.9 right 9 times in 10, confidence 0.6 right 6 times in 10: calibrated exactly.
    probs = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    labels = np.array([0] * 9 + [1] + [1] * 6 + [0] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Labels drawn from the predicted distribution: calibrated in expectation, ECE only sampling noise
    # (about 1 / sqrt(n) per bin, weighted by the bins' shares).
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=100_000)
    labels = (probs.cumsum(1) < rng.random((100_000, 1))).sum(1)
    assert expected_calibration_error(probs, labels) < 0.01


def test_ece_of_an_over_confident_model_by_hand():
    # 10 samples at confidence 0.95 with 6 right, 4 at confidence 0.7 with 1 right (bins 14 and 10 of 15):
    # ECE = 10/14 * |0.6 - 0.95| + 4/14 * |0.25 - 0.7| = (3.5 + 1.8) / 14 = 53 / 140.
    probs = np.array([[0.95, 0.05]] * 10 + [[0.3, 0.7]] * 4)
    labels = np.array([0] * 6 + [1] * 4 + [1] + [0] * 3)
    assert expected_calibration_error(probs, labels) == pytest.approx(53 / 140, rel=1e-12, abs=1e-12)


def test_ece_bins_are_closed_on_the_right():
    # bins=4: a confidence of exactly 0.5 belongs to (0.25, 0.5], with the 0.4 sample: one bin with accuracy
    # 1/2 and confidence 0.45, ECE 0.05. Were 0.5 put in (0.5, 0.75], ECE would be (0.5 + 0.4) / 2 = 0.45.
    probs = np.array([[0.5, 0.25, 0.25], [0.4, 0.3, 0.3]])
    assert expected_calibration_error(probs, [0, 1], bins=4) == pytest.approx(0.05, rel=1e-12, abs=1e-12)


def test_evaluation_report_with_probabilities_adds_ece_per_group_and_group_mass():
    c = 30
    counts = [int(500 * 100 ** (-i / (c - 1))) for i in range(c)]
    rng = np.random.default_rng(12)
    refs = rng.integers(0, c, size=600)
    logits = rng.normal(size=(600, c)) + 2.5 * np.eye(c)[refs] + np.log(counts)  # a head-biased model
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    report = evaluation_report(probs.argmax(1), refs, class_counts=counts, probabilities=probs)

    paper = ClassGroups.from_counts(counts, 3)
    assert math.isclose(report["ece"], loop_ece(probs.tolist(), refs.tolist(), 15), rel_tol=1e-9, abs_tol=1e-12)
    for g, name in enumerate(paper.names):
        # Grouped by the TRUE label's group, whatever class the model predicted.
        keep = [i for i, r in enumerate(refs.tolist()) if paper.class_to_group[r] == g]
        want = loop_ece(probs[keep].tolist(), refs[keep].tolist(), 15)
        assert math.isclose(report[f"ece_{name}"], want, rel_tol=1e-9, abs_tol=1e-12), name
    want_mass = [sum(probs[i, k] for i in range(600) for k in paper.classes_of(g)) / 600 for g in range(3)]
    assert np.allclose(report["group_mass"], want_mass, rtol=1e-9, atol=1e-12)  # float64 sums of 600 rows
    assert report["group_mass"][0] > 1 / 3 > report["group_mass"][2]  # the head bias built into the logits
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_ece_of_a_group_without_test_samples_is_null():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    report = evaluation_report([0, 1], [0, 1], class_counts=[50, 20, 5], probabilities=probs)
    assert report["ece_tail"] is None and report["ece_head"] == pytest.approx(0.2, abs=1e-12)


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
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        expected_calibration_error(np.full((1, 3), 1 / 3), [0], bins=0)
    with pytest.raises(ValueError, match="same length, got 2 rows and 1 labels"):
        expected_calibration_error(np.full((2, 3), 1 / 3), [0])
    with pytest.raises(ValueError, match=r"labels holds class indices \[3\] outside 0..2"):
        expected_calibration_error(np.full((1, 3), 1 / 3), [3])
    with pytest.raises(ValueError, match="sum to 1.*pass softmax"):
        expected_calibration_error(np.array([[3.0, -1.0, 0.2]]), [0])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    with pytest.raises(ValueError, match=r"predictions differ from probabilities.argmax\(-1\) at 1 of 2 samples"):
        evaluation_report([0, 1], [0, 2], class_counts=[10, 5, 1], probabilities=probs)
    with pytest.raises(ValueError, match="probabilities has 2 rows but there are 3 references"):
        evaluation_report([0, 2, 2], [0, 2, 2], class_counts=[10, 5, 1], probabilities=probs)
    with pytest.raises(ValueError, match=r"C = 3 .* got shape \(2, 4\)"):
        evaluation_report([0, 2], [0, 2], class_counts=[10, 5, 1], probabilities=np.full((2, 4), 0.25))


def test_a_test_split_is_called_balanced_only_when_it_is():
    from ltkd_hf.evaluation import describe_test_split

    assert describe_test_split([30, 30, 30]) == "balanced, 30 images per class"
    assert describe_test_split([1]) == "balanced, 1 image per class"
    assert describe_test_split([7, 1, 3]) == "not balanced: 1 to 7 images per class"
    assert describe_test_split(None) == ""
