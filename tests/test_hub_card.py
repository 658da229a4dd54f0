"""The model card: front matter the Hub accepts, model-index with the four accuracies, a body that says what ran."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

import numpy as np

from ltkd_hf import ClassGroups, SplitInfo
from ltkd_hf.evaluation import evaluation_report, format_report_tables
from ltkd_hf.hub import render_model_card, write_model_card
from ltkd_hf.hub.card import results_from_report

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = {"accuracy": 0.5125, "accuracy_head": 0.705, "accuracy_medium": 0.5275, "accuracy_tail": 0.27125, "nll": 1.875}
EXAMPLE_BANNER = (
    "> **EXAMPLE card.** Rendered by `ltkd_hf.hub.render_model_card` to show the layout; every number in it "
    "is made up, not a measured result."
)
LT = {"imbalance_factor": 100.0, "seed": 0, "profile": "exp", "exponent": "standard", "class_order_seed": None}
COUNTS = [500, 300, 200, 120, 70, 40, 20, 10, 5]
HUB_SPLIT = SplitInfo(COUNTS, [f"class_{i}" for i in range(9)], "uoft-cs/cifar100", "hub", "train", "test", LT)
GROUPS = ClassGroups.from_counts(COUNTS, 3)
SHOTS_AND_ECE = {"accuracy_many_shot": 0.68, "accuracy_medium_shot": 0.49, "accuracy_few_shot": 0.22,
                 "ece": 0.08, "ece_head": 0.04, "ece_medium": 0.085, "ece_tail": 0.13}
THRESHOLDS = {"many": 100, "few": 20}
TEST_COUNTS = [100] * len(COUNTS)  # a balanced test split, as CIFAR-100's
# Made-up evaluation_report rows (only the keys the tables read) for the EXAMPLE card's comparison.
EXAMPLE_ROWS = {
    "teacher": {"accuracy": 0.45, "accuracy_head": 0.70, "accuracy_medium": 0.45, "accuracy_tail": 0.15,
                "accuracy_many_shot": 0.72, "accuracy_medium_shot": 0.40, "accuracy_few_shot": 0.10,
                "threshold_groups": THRESHOLDS, "ece": 0.15, "ece_head": 0.05, "ece_medium": 0.16, "ece_tail": 0.31,
                "group_mass": [0.52, 0.31, 0.17], "test_counts": TEST_COUNTS},
    "student (CE)": {"accuracy": 0.42, "accuracy_head": 0.68, "accuracy_medium": 0.42, "accuracy_tail": 0.13,
                     "accuracy_many_shot": 0.70, "accuracy_medium_shot": 0.37, "accuracy_few_shot": 0.08,
                     "threshold_groups": THRESHOLDS, "ece": 0.13, "ece_head": 0.06, "ece_medium": 0.14,
                     "ece_tail": 0.26, "group_mass": [0.50, 0.32, 0.18], "test_counts": TEST_COUNTS},
    "student (LTKD)": {"accuracy": 0.50, "accuracy_head": 0.70, "accuracy_medium": 0.52, "accuracy_tail": 0.27,
                       **SHOTS_AND_ECE, "threshold_groups": THRESHOLDS, "group_mass": [0.38, 0.33, 0.29],
                       "test_counts": TEST_COUNTS},
}
# The arguments model_cards/EXAMPLE.md was rendered from (test_example_card_is_in_sync keeps them in step).
EXAMPLE_KWARGS = dict(
    model_name="example-user/EXAMPLE-cifar_resnet8x4-cifar100lt-r100-ltkd",
    architecture="cifar_resnet8x4",
    teacher="example-user/EXAMPLE-cifar_resnet32x4-cifar100lt-r100",
    split_info=HUB_SPLIT,
    groups=GROUPS,
    loss_name="ltkd",
    loss_description="LTKD: T^2*(6.0*KL(rebalanced b_t||b_s) + 6.0*sum_G KL(q_t,G||q_s,G)), T=4.0, K=3",
    loss_config={"alpha": 6.0, "beta": 6.0, "temperature": 4.0, "ce_weight": 1.0, "warmup_epochs": 20},
    training={"training seed": 0, "epochs": 240, "weights evaluated": "last epoch"},
    results={"accuracy": 0.50, "accuracy_head": 0.70, "accuracy_medium": 0.52, "accuracy_tail": 0.27, **SHOTS_AND_ECE},
    plots=["per_class_accuracy.png", "teacher_bias.png"],
    comparison_table=format_report_tables(EXAMPLE_ROWS, GROUPS),
    test_counts=TEST_COUNTS,
)


def _card(**overrides) -> str:
    kwargs = dict(
        model_name="alice/resnet8x4-ltkd",
        architecture="cifar_resnet8x4",
        teacher="alice/resnet32x4-lt-teacher",
        split_info=HUB_SPLIT,
        groups=GROUPS,
        loss_name="ltkd",
        loss_config={"alpha": 6.0, "beta": 6.0, "temperature": 4.0},
        training={"training seed": 7},
        results=RESULTS,
        plots=["plots/per_class.png"],
    )
    kwargs.update(overrides)
    return render_model_card(**kwargs)


def _front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "the card must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def _example_text() -> str:
    text = render_model_card(**EXAMPLE_KWARGS)
    return text.replace("\n---\n\n# ", f"\n---\n\n{EXAMPLE_BANNER}\n\n# ", 1)


def test_front_matter_holds_hub_metadata_and_model_index() -> None:
    meta = _front_matter(_card())
    assert meta["library_name"] == "timm"
    assert {"image-classification", "knowledge-distillation", "long-tailed", "ltkd", "timm"} <= set(meta["tags"])
    assert meta["datasets"] == ["uoft-cs/cifar100"]
    # a student trained from scratch derives from no checkpoint: the Hub would list it among the teacher's fine-tunes
    assert "base_model" not in meta and "alice/resnet32x4-lt-teacher" in _card()
    assert meta["license"] == "apache-2.0"
    (entry,) = meta["model-index"]
    assert entry["name"] == "alice/resnet8x4-ltkd"
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"] == {"name": "uoft-cs/cifar100", "type": "uoft-cs/cifar100", "split": "test"}
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics == RESULTS  # one entry per metric, the four accuracies included, values unchanged


def test_huggingface_hub_model_card_reads_the_four_accuracies() -> None:
    card = ModelCard(_card(split_info=SplitInfo(COUNTS, HUB_SPLIT.label_names, "ILSVRC/imagenet-1k", "hub",
                                                "train", "validation", LT)))
    by_metric = {r.metric_type: r for r in card.data.eval_results}
    for key in ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail"):
        assert by_metric[key].metric_value == RESULTS[key]
        assert by_metric[key].dataset_split == "validation"
        assert by_metric[key].task_type == "image-classification"
    assert card.data.library_name == "timm"


def test_body_has_usage_setup_results_plots_and_citation() -> None:
    text = _card()
    body = text.split("\n---\n", 1)[1]
    assert 'timm.create_model("hf-hub:alice/resnet8x4-ltkd", pretrained=True)' in body
    assert 'AutoModelForImageClassification.from_pretrained("alice/resnet8x4-ltkd")' in body
    assert 'pipeline("image-classification", model="alice/resnet8x4-ltkd")' in body
    assert 'timm.create_model("local-dir:path/to/resnet8x4-ltkd", pretrained=True)' in body
    assert body.count("import ltkd_hf") >= 2
    assert "n_c = int(N_c * 100^(-c / (C - 1))), imbalance factor 100" in body and "LT seed 0" in body
    assert "| Training seed | 7 |" in body
    for key, value in {"alpha": 6.0, "beta": 6.0, "temperature": 4.0}.items():
        assert f"| `{key}` | `{value}` |" in body
    for row in ("| head | 70.50 |", "| medium | 52.75 |", "| tail | 27.12 |", "| all classes | 51.25 |",
                "| nll | 1.875 |"):
        assert row in body
    assert "ECE" not in body and "many-shot" not in body  # neither was given
    assert "![plots/per_class.png](plots/per_class.png)" in body
    assert "Distilling Balanced Knowledge from a Biased Teacher" in body and "2506.18496" in body
    assert "{{" not in text and "{%" not in text


def test_shot_accuracy_and_calibration_in_body_and_model_index() -> None:
    text = _card(results={**RESULTS, **SHOTS_AND_ECE})
    body = text.split("\n---\n", 1)[1]
    assert "| Classes | Top-1 accuracy (%) | ECE (%) |" in body
    for row in ("| head | 70.50 | 4.00 |", "| medium | 52.75 | 8.50 |", "| tail | 27.12 | 13.00 |",
                "| all classes | 51.25 | 8.00 |", "| many-shot | 68.00 |", "| medium-shot | 49.00 |",
                "| few-shot | 22.00 |", "| nll | 1.875 |"):
        assert row in body, row
    assert "many-shot: more than 100,\nmedium-shot: 20 to 100, few-shot: fewer than 20" in body
    card = ModelCard(text)
    by_metric = {r.metric_type: r for r in card.data.eval_results}
    assert {k: by_metric[k].metric_value for k in SHOTS_AND_ECE} == SHOTS_AND_ECE
    assert by_metric["ece_tail"].metric_name == "Expected calibration error (tail classes, 15 bins)"
    assert by_metric["accuracy_few_shot"].metric_name == (
        "Top-1 accuracy (few-shot classes: fewer than 20 training images)")


def test_results_from_report_keeps_the_finite_accuracies_and_ece() -> None:
    rng = np.random.default_rng(0)
    refs = np.repeat(np.arange(9), 4)
    probs = rng.dirichlet(np.ones(9), size=refs.size)
    report = evaluation_report(probs.argmax(1), refs, class_counts=[500, 300, 200, 120, 70, 40, 30, 25, 20],
                               probabilities=probs)
    results = results_from_report(report)
    assert report["accuracy_few_shot"] is None  # no class under 20 images: left out of the card
    assert set(results) == {"accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail", "accuracy_many_shot",
                            "accuracy_medium_shot", "ece", "ece_head", "ece_medium", "ece_tail"}
    assert all(results[k] == report[k] for k in results)
    text = _card(results=results)
    assert "| few-shot | n/a |" in text and f"| all classes | {100 * report['accuracy']:.2f} | " in text


def test_card_states_what_ran_for_a_local_dataset_and_teacher(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    step = dict(LT, profile="step", imbalance_factor=10.0, seed=3)
    local = SplitInfo(COUNTS, HUB_SPLIT.label_names, str(tmp_path / "birds"), "local", "train", "val", step)
    text = _card(teacher=str(teacher), model_name="resnet8x4-ltkd", split_info=local, student_init="local-dir:/ckpt")
    meta = _front_matter(text)
    assert "base_model" not in meta and "datasets" not in meta  # neither is on the Hub
    assert meta["model-index"][0]["results"][0]["dataset"]["split"] == "val"
    assert f"| Teacher | `{teacher}` |" in text
    assert "started from `local-dir:/ckpt`" in text
    assert "step profile: the first C // 2 classes keep all images, the others n_c / 10" in text and "LT seed 3" in text
    # the split is called balanced only when its images per class say so (an unbalanced one was called balanced)
    assert "balanced" not in text.split("## Results")[0].replace("balanced target", "")
    balanced = _card(split_info=local, test_counts=[50] * len(COUNTS))
    assert "split `val` (balanced, 50 images per class)" in balanced and "on the `val` split (balanced, 50" in balanced
    uneven = _card(split_info=local, test_counts=[7, 1, *[3] * (len(COUNTS) - 2)])
    assert "split `val` (not balanced: 1 to 7 images per class)" in uneven
    # a model name that is not a repo id gets a placeholder namespace in the usage snippets
    assert 'hf-hub:<your-username>/resnet8x4-ltkd"' in text
    # one a repo id can be: an output folder with spaces and brackets gave "<your-username>/my run (v2)"
    assert 'hf-hub:<your-username>/my-run-v2"' in _card(model_name="outputs/my run (v2)")


def test_the_tags_say_what_trained_the_model() -> None:
    """Every card was tagged knowledge-distillation and ltkd: the biased teacher's (cross-entropy) and a DKD
    student's too."""
    assert set(_front_matter(_card(loss_name="ce", teacher=None))["tags"]) == {"image-classification", "long-tailed",
                                                                               "timm"}
    dkd = set(_front_matter(_card(loss_name="dkd", loss_config={"alpha": 1.0, "beta": 8.0}))["tags"])
    assert "ltkd" not in dkd and {"knowledge-distillation", "dkd"} <= dkd


def test_student_checkpoint_on_the_hub_is_the_base_model() -> None:
    meta = _front_matter(_card(student_init="hf-hub:timm/resnet18.a1_in1k"))
    assert meta["base_model"] == "timm/resnet18.a1_in1k"


def test_other_group_counts_render_their_own_rows() -> None:
    groups = ClassGroups.from_counts(COUNTS, 5)
    results = {**RESULTS, "accuracy_group_0": 0.8, "accuracy_group_4": 0.1}
    text = _card(groups=groups, results=results)
    assert "| group_0 | 80.00 |" in text and "| group_4 | 10.00 |" in text and "| group_2 | n/a |" in text
    assert "| Top-1 accuracy (tail classes) | 27.12 |" in text


def test_bad_inputs_are_explained() -> None:
    with pytest.raises(ValueError, match=r"results is missing \['accuracy_tail'\]"):
        _card(results={k: v for k, v in RESULTS.items() if k != "accuracy_tail"})
    with pytest.raises(ValueError, match="plots entry '/abs/plot.png' must be a path relative"):
        _card(plots=["/abs/plot.png"])
    with pytest.raises(ValueError, match="plots entry 'https://x/y.png'"):
        _card(plots=["https://x/y.png"])
    with pytest.raises(ValueError, match="results values must be finite numbers"):
        _card(results={**RESULTS, "accuracy": float("nan")})


def test_write_model_card_is_atomic(tmp_path: Path) -> None:
    text = _card()
    path = write_model_card(tmp_path / "student", text)
    assert path == tmp_path / "student" / "README.md"
    assert path.read_text(encoding="utf-8") == text
    with pytest.raises(TypeError):
        write_model_card(tmp_path / "student", None)  # fails while writing: the previous card must stay
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in path.parent.iterdir()] == ["README.md"]


def test_example_card_is_in_sync() -> None:
    example = (REPO_ROOT / "model_cards" / "EXAMPLE.md").read_text(encoding="utf-8")
    assert example == _example_text()
    assert EXAMPLE_BANNER in example
    assert ModelCard(example).data.eval_results[3].metric_value == 0.27


if __name__ == "__main__":  # regenerate model_cards/EXAMPLE.md: python3 tests/test_hub_card.py
    (REPO_ROOT / "model_cards" / "EXAMPLE.md").write_text(_example_text(), encoding="utf-8")
