import json
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ltkd_hf import ClassGroups
from ltkd_hf.evaluation import evaluation_report, format_group_table, plot_per_class_accuracy, plot_teacher_bias
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


@pytest.fixture(scope="module")
def reports():
    rng = np.random.default_rng(4)
    refs = np.repeat(np.arange(C), 10)
    out = {}
    for name, skill in [("teacher", 0.9), ("student (CE)", 0.6), ("student (LTKD)", 0.7)]:
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


def test_write_report_files_read_back(tmp_path, reports):
    mass = [27.88, 19.28, 16.83]
    paths = write_report(tmp_path / "out", reports, class_counts=COUNTS, groups=GROUPS, teacher_group_mass=mass,
                         metadata={"dataset": "digits-LT", "checkpoint": "last epoch", "seed": np.int64(0)})
    assert set(paths) == {"json", "markdown", "per_class_plot", "teacher_bias_plot"}

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert data["metadata"] == {"dataset": "digits-LT", "checkpoint": "last epoch", "seed": 0}
    assert data["models"] == json.loads(json.dumps(reports))
    assert data["groups"]["class_to_group"] == list(GROUPS.class_to_group)
    assert data["class_counts"] == COUNTS and data["teacher_group_mass"] == mass

    markdown = paths["markdown"].read_text()
    assert "**checkpoint**: last epoch" in markdown
    _, rows = parse_table(markdown)
    assert list(rows) == list(reports)
    for model, report in reports.items():
        for column, key in [("head", "accuracy_head"), ("tail", "accuracy_tail"), ("overall", "accuracy")]:
            assert rows[model][column] == f"{round(100 * report[key], 2):.2f}"
    assert "(per_class_accuracy.png)" in markdown and "(teacher_bias.png)" in markdown

    for key in ("per_class_plot", "teacher_bias_plot"):
        with Image.open(paths[key]) as image:
            assert image.format == "PNG"
            assert 400 <= image.width <= 2000 and 300 <= image.height <= 1500
            # Not a blank canvas: a drawn plot has many distinct colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_no_teacher_plot_without_mass(tmp_path, reports):
    paths = write_report(tmp_path, reports, class_counts=COUNTS, groups=GROUPS)
    assert "teacher_bias_plot" not in paths and not (tmp_path / "teacher_bias.png").exists()
    assert json.loads(paths["json"].read_text())["teacher_group_mass"] is None


def test_teacher_bias_reference_is_group_share_of_total(tmp_path, reports, monkeypatch):
    seen = {}

    def record(mass, group_names, path, *, reference=None):
        seen.update(mass=list(mass), names=list(group_names), reference=list(reference))
        return path

    monkeypatch.setattr(report_module, "plot_teacher_bias", record)
    groups = ClassGroups((0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2), ("head", "medium", "tail"))
    write_report(tmp_path, reports, class_counts=COUNTS, groups=groups, teacher_group_mass=[40.0, 14.0, 10.0])
    total = 64.0
    assert seen["names"] == ["head", "medium", "tail"]
    assert np.allclose(seen["reference"], [total * 6 / 12, total * 3 / 12, total * 3 / 12])


def test_interrupted_json_write_keeps_the_last_good_file(tmp_path, reports):
    write_report(tmp_path, reports, class_counts=COUNTS, groups=GROUPS, metadata={"run": 1})
    before = (tmp_path / "report.json").read_bytes()
    # json.dump streams: the unserialisable value fails after part of the file is written.
    with pytest.raises(ValueError, match="JSON cannot store"):
        write_report(tmp_path, reports, class_counts=COUNTS, groups=GROUPS, metadata={"run": 2, "bad": object()})
    assert (tmp_path / "report.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_class_accuracy.png", "report.json", "report.md"]


def test_interrupted_plot_keeps_the_last_good_png(tmp_path, reports, monkeypatch):
    path = plot_teacher_bias([0.5, 0.3, 0.2], GROUPS.names, tmp_path / "bias.png")
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG") and len(before) > 1000

    def half_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(before[:100])
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plot_teacher_bias([0.6, 0.3, 0.1], GROUPS.names, path)
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
    with pytest.raises(ValueError, match=r"mass must hold one value per group name"):
        plot_teacher_bias([0.5, 0.5], GROUPS.names, tmp_path / "y.png")
    with pytest.raises(ValueError, match="reports is empty"):
        write_report(tmp_path, {}, class_counts=COUNTS, groups=GROUPS)
    assert list(tmp_path.iterdir()) == []
