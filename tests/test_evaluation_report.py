import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ltkd_hf import ClassGroups
from ltkd_hf.evaluation import (
    balanced_group_mass,
    evaluation_report,
    format_group_table,
    plot_group_mass,
    plot_per_class_accuracy,
)
from ltkd_hf.evaluation import report as report_module
from ltkd_hf.evaluation import write_report

C = 12
COUNTS = [int(300 * 50 ** (-i / (C - 1))) for i in range(C)]  # 300 ... 6
GROUPS = ClassGroups.from_counts(COUNTS, 3)


def parse_table(markdown, header_first_cell="model"):
    """Rows of the first Markdown table whose header starts with ``header_first_cell``: name -> cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_first_cell} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return header, rows


def softmax_of_biased_model(rng, refs, skill, bias):
    """Softmax rows of a model that knows the label (``skill``) and leans to frequent classes (``bias``)."""
    logits = rng.normal(size=(refs.size, C)) + skill * np.eye(C)[refs] + bias * np.log(COUNTS)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def reports():
    rng = np.random.default_rng(4)
    refs = np.repeat(np.arange(C), 10)
    out = {}
    for name, skill, bias in [("teacher", 4.0, 1.5), ("student (CE)", 2.5, 1.2), ("student (LTKD)", 3.0, 0.2)]:
        probs = softmax_of_biased_model(rng, refs, skill, bias)
        out[name] = evaluation_report(probs.argmax(1), refs, class_counts=COUNTS, probabilities=probs)
    return out


@pytest.fixture(scope="module")
def accuracy_only_reports():
    rng = np.random.default_rng(4)
    refs = np.repeat(np.arange(C), 10)
    out = {}
    for name, skill in [("teacher", 0.9), ("student (LTKD)", 0.7)]:
        preds = np.where(rng.random(refs.size) < skill, refs, rng.integers(0, C, refs.size))
        out[name] = evaluation_report(preds, refs, class_counts=COUNTS)
    return out


def test_format_group_table_rows_are_percentages_with_two_decimals():
    rows = {
        "teacher": {"accuracy": 0.61234, "accuracy_head": 0.8, "accuracy_medium": 0.555555, "accuracy_tail": 0.3},
        "student (LTKD)": {"accuracy": 0.5, "accuracy_head": None, "accuracy_medium": 1.0, "accuracy_tail": math.nan},
    }
    header, parsed = parse_table(format_group_table(rows))
    assert header == ["model", "head", "medium", "tail", "overall"]
    assert parsed["teacher"] == {"head": "80.00", "medium": "55.56", "tail": "30.00", "overall": "61.23"}
    assert parsed["student (LTKD)"] == {"head": "n/a", "medium": "100.00", "tail": "n/a", "overall": "50.00"}
    with pytest.raises(ValueError, match=r"rows\['teacher'\] lacks \['accuracy_few'\]"):
        format_group_table(rows, ("few",))


def test_format_group_table_other_metrics():
    rows = {"a": {"ece": 0.1234, "ece_head": 0.05, "ece_tail": None, "accuracy_many_shot": 0.9, "accuracy": 0.5}}
    header, parsed = parse_table(format_group_table(rows, ("head", "tail"), metric="ece"))
    assert header == ["model", "head", "tail", "overall"] and parsed["a"] == {"head": "5.00", "tail": "n/a",
                                                                               "overall": "12.34"}
    _, parsed = parse_table(format_group_table(rows, ("many",), suffix="_shot"))
    assert parsed["a"] == {"many": "90.00", "overall": "50.00"}
    with pytest.raises(ValueError, match=r"lacks \['accuracy_few_shot'\].*'accuracy_<group>_shot'"):
        format_group_table(rows, ("few",), suffix="_shot")


def tables_after(markdown, caption_start):
    """The table that follows the caption starting with ``caption_start``."""
    return parse_table(markdown[markdown.index(caption_start):])[1]


def test_write_report_files_read_back(tmp_path, reports):
    paths = write_report(tmp_path / "out", reports, class_counts=COUNTS, groups=GROUPS,
                         metadata={"dataset": "digits-LT", "checkpoint": "last epoch", "seed": np.int64(0),
                                   "model": {"architecture": "cifar_resnet8x4", "init": None}})
    assert set(paths) == {"json", "markdown", "per_class_plot", "teacher_bias_plot"}

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert data["metadata"] == {"dataset": "digits-LT", "checkpoint": "last epoch", "seed": 0,
                                "model": {"architecture": "cifar_resnet8x4", "init": None}}
    assert data["models"] == json.loads(json.dumps(reports))
    for report in data["models"].values():
        assert {"ece", "ece_head", "ece_medium", "ece_tail", "group_mass", "accuracy_many_shot",
                "accuracy_medium_shot", "accuracy_few_shot"} <= set(report)
    assert data["groups"]["class_to_group"] == list(GROUPS.class_to_group)
    assert data["class_counts"] == COUNTS
    assert data["balanced_group_mass"] == [s / C for s in GROUPS.sizes]

    markdown = paths["markdown"].read_text()
    assert "**checkpoint**: last epoch" in markdown
    assert "- **model**: architecture cifar_resnet8x4, init none\n" in markdown  # not a Python dict's repr
    assert "Top-1 accuracy (%) on the test split (balanced, 10 images per class)" in markdown
    _, rows = parse_table(markdown)
    assert list(rows) == list(reports)
    for model, report in reports.items():
        for column, key in [("head", "accuracy_head"), ("tail", "accuracy_tail"), ("overall", "accuracy")]:
            assert rows[model][column] == f"{round(100 * report[key], 2):.2f}"
    shots = tables_after(markdown, "Top-1 accuracy (%) by training images per class (many-shot: more than 100, "
                                   "medium-shot: 20 to 100, few-shot: fewer than 20")
    eces = tables_after(markdown, "Expected calibration error (%, top-label confidence in 15 equal-width bins")
    masses = tables_after(markdown, "Mean predicted probability mass per group")
    for model, report in reports.items():
        for name in ("many", "medium", "few"):
            assert shots[model][name] == f"{100 * report[f'accuracy_{name}_shot']:.2f}"
        for column, key in [("head", "ece_head"), ("medium", "ece_medium"), ("tail", "ece_tail"), ("overall", "ece")]:
            assert eces[model][column] == f"{100 * report[key]:.2f}"
        assert [masses[model][n] for n in GROUPS.names] == [f"{v:.3f}" for v in report["group_mass"]]
    assert [masses["balanced target"][n] for n in GROUPS.names] == [f"{s / C:.3f}" for s in GROUPS.sizes]
    assert "(per_class_accuracy.png)" in markdown and "(teacher_bias.png)" in markdown

    for key in ("per_class_plot", "teacher_bias_plot"):
        with Image.open(paths[key]) as image:
            assert image.format == "PNG"
            assert 400 <= image.width <= 2000 and 300 <= image.height <= 1500
            # Not a blank canvas: a drawn plot has many distinct colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_an_unbalanced_test_split_is_not_called_balanced(tmp_path):
    """Every report said "the balanced test split", whatever the test split held."""
    refs = np.array([0] * 7 + [1] * 2 + list(range(2, C)))  # 7, 2, then 1 image per class
    report = evaluation_report(refs, refs, class_counts=COUNTS)
    markdown = write_report(tmp_path, {"model": report}, class_counts=COUNTS, groups=GROUPS)["markdown"].read_text()
    assert "on the test split (not balanced: 1 to 7 images per class)" in markdown and "balanced test" not in markdown


def test_validation_accuracies_have_their_own_table(tmp_path, reports):
    """The validation accuracies were in report.json only, though the docs said every report and card showed
    them (the card embeds these tables)."""
    held = {"accuracy": 0.5, "accuracy_head": 0.75, "accuracy_medium": 0.5, "accuracy_tail": 0.25}
    rows = {name: {**report, "validation": held} if name == "student (LTKD)" else report
            for name, report in reports.items()}
    markdown = write_report(tmp_path, rows, class_counts=COUNTS, groups=GROUPS)["markdown"].read_text()
    section = markdown.split("on the validation split")[1]
    _, table = parse_table(section)
    assert list(table) == ["student (LTKD)"]
    assert table["student (LTKD)"] == {"head": "75.00", "medium": "50.00", "tail": "25.00", "overall": "50.00"}


def test_bias_plot_draws_every_model_beside_the_balanced_target(tmp_path, reports, monkeypatch):
    drawn = {}

    def keep_figure(fig, path):
        drawn["axes"] = fig.axes[0]
        return Path(path)

    monkeypatch.setattr(report_module, "_save_figure", keep_figure)
    groups = ClassGroups.from_counts(COUNTS, 3)
    plot_group_mass({m: r["group_mass"] for m, r in reports.items()}, groups, tmp_path / "bias.png")
    ax = drawn["axes"]
    # One bar per model and group, in the models' order, each as tall as that model's mass on that group.
    heights = np.array([bar.get_height() for bar in ax.patches]).reshape(len(reports), groups.num_groups)
    assert np.allclose(heights, [r["group_mass"] for r in reports.values()], rtol=0, atol=1e-12)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "balanced target (share of classes)", *reports]
    (target,) = ax.collections  # the dashed segments: one per group, at the group's share of the classes
    assert np.allclose([seg[0][1] for seg in target.get_segments()], [s / C for s in groups.sizes], atol=1e-12)
    # The students sit beside the teacher: the CE student stays head-biased, the LTKD one comes near the target.
    teacher, ce, ltkd = heights[:, 0]
    assert teacher > ce > ltkd


def test_balanced_target_is_each_groups_share_of_classes():
    groups = ClassGroups((0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2), ("head", "medium", "tail"))
    assert balanced_group_mass(groups).tolist() == [6 / 12, 3 / 12, 3 / 12]


def test_group_mass_on_a_batch_scale_gets_a_scaled_target(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(report_module, "_save_figure", lambda fig, path: drawn.setdefault("axes", fig.axes[0]))
    groups = ClassGroups((0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2), ("head", "medium", "tail"))
    plot_group_mass({"teacher": [40.0, 14.0, 10.0], "student": [30.0, 20.0, 14.0]}, groups, tmp_path / "x.png")
    (target,) = drawn["axes"].collections
    assert np.allclose([seg[0][1] for seg in target.get_segments()], [32.0, 16.0, 16.0], atol=1e-12)  # 64 * share
    assert "batch of 64" in drawn["axes"].get_ylabel()


def test_no_bias_plot_or_calibration_without_probabilities(tmp_path, accuracy_only_reports):
    paths = write_report(tmp_path, accuracy_only_reports, class_counts=COUNTS, groups=GROUPS)
    assert "teacher_bias_plot" not in paths and not (tmp_path / "teacher_bias.png").exists()
    markdown = paths["markdown"].read_text()
    assert "Expected calibration error" not in markdown and "probability mass" not in markdown
    assert "many-shot: more than 100" in markdown


def test_interrupted_json_write_keeps_the_last_good_file(tmp_path, reports):
    write_report(tmp_path, reports, class_counts=COUNTS, groups=GROUPS, metadata={"run": 1})
    before = (tmp_path / "report.json").read_bytes()
    # json.dump streams: the unserialisable value fails after part of the file is written.
    with pytest.raises(ValueError, match="JSON cannot store"):
        write_report(tmp_path, reports, class_counts=COUNTS, groups=GROUPS, metadata={"run": 2, "bad": object()})
    assert (tmp_path / "report.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "per_class_accuracy.png", "report.json", "report.md", "teacher_bias.png"]


def test_interrupted_plot_keeps_the_last_good_png(tmp_path, reports, monkeypatch):
    path = plot_group_mass({"teacher": [0.5, 0.3, 0.2]}, GROUPS, tmp_path / "bias.png")
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG") and len(before) > 1000

    def half_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(before[:100])
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plot_group_mass({"teacher": [0.6, 0.3, 0.1]}, GROUPS, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bias.png"]


def test_plot_inputs_are_checked(tmp_path):
    good = {"a": [0.5] * C}
    with pytest.raises(ValueError, match=r"per_class_by_model\['b'\] has 3 values, expected one per class \(12\)"):
        plot_per_class_accuracy({**good, "b": [0.1, 0.2, 0.3]}, COUNTS, GROUPS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_counts has 3 entries but groups covers 12"):
        plot_per_class_accuracy(good, [5, 4, 3], GROUPS, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"class_counts must be >= 1 .* classes \[11\]"):
        plot_per_class_accuracy(good, COUNTS[:-1] + [0], GROUPS, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"masses\['b'\] must hold one finite value per group"):
        plot_group_mass({"a": [0.5, 0.3, 0.2], "b": [0.5, 0.5]}, GROUPS, tmp_path / "y.png")
    with pytest.raises(ValueError, match="masses have different totals"):
        plot_group_mass({"a": [0.5, 0.3, 0.2], "b": [32.0, 16.0, 16.0]}, GROUPS, tmp_path / "y.png")
    with pytest.raises(ValueError, match="reports is empty"):
        write_report(tmp_path, {}, class_counts=COUNTS, groups=GROUPS)
    assert list(tmp_path.iterdir()) == []


def test_write_report_checks_reports_against_groups_before_writing(tmp_path, reports):
    with pytest.raises(ValueError, match=r"reports for \['teacher', .*\] were built with other groups"):
        write_report(tmp_path, reports, class_counts=COUNTS, groups=ClassGroups.from_counts(COUNTS, 4))
    bad = {**reports, "student (CE)": {**reports["student (CE)"], "group_mass": [0.9, 0.1]}}
    with pytest.raises(ValueError, match=r"masses\['student \(CE\)'\] must hold one finite value per group"):
        write_report(tmp_path, bad, class_counts=COUNTS, groups=GROUPS)
    assert list(tmp_path.iterdir()) == []
