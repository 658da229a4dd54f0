import ast
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ltkd_hf import ClassGroups
from ltkd_hf.evaluation import GROUP_ACCURACY_PATH, load_group_accuracy


def loop_reference(preds, refs, class_to_group, names):
    out = {"accuracy": sum(p == r for p, r in zip(preds, refs)) / len(refs)}
    for g, name in enumerate(names):
        pairs = [(p, r) for p, r in zip(preds, refs) if class_to_group[r] == g]
        out[f"accuracy_{name}"] = sum(p == r for p, r in pairs) / len(pairs) if pairs else math.nan
    return out


@pytest.fixture(scope="module")
def metric():
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    return load_group_accuracy()


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 200, size=20).tolist()
    refs = rng.integers(0, 20, size=250)
    preds = np.where(rng.random(250) < 0.5, refs, rng.integers(0, 20, size=250))
    return ClassGroups.from_counts(counts, 3), preds.tolist(), refs.tolist()


def test_path_is_the_packaged_script_and_imports_one_name_per_line():
    path = Path(GROUP_ACCURACY_PATH)
    assert path.is_file() and path.name == "group_accuracy.py"
    assert path.parent.parent == Path(inspect.getfile(load_group_accuracy)).parent
    tree = ast.parse(path.read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    # evaluate copies the script alone: a relative import would not resolve in its cache.
    assert all(getattr(node, "level", 0) == 0 for node in imports)
    assert all(len(node.names) == 1 for node in imports if isinstance(node, ast.Import))


def test_loaded_offline_from_evaluates_cache_and_matches_loop(metric, case):
    groups, preds, refs = case
    # evaluate imports a copy of the script from its modules cache, not the packaged file.
    loaded_from = Path(inspect.getfile(type(metric)))
    assert loaded_from != Path(GROUP_ACCURACY_PATH) and "evaluate_modules" in loaded_from.parts
    assert loaded_from.read_text() == Path(GROUP_ACCURACY_PATH).read_text()

    got = metric.compute(
        predictions=preds, references=refs, class_to_group=list(groups.class_to_group), group_names=list(groups.names)
    )
    want = loop_reference(preds, refs, groups.class_to_group, groups.names)
    assert list(got) == list(want)
    assert all(math.isclose(got[k], want[k]) for k in want)


def test_batches_accumulate_and_overall_only_without_groups(metric, case):
    groups, preds, refs = case
    for start in range(0, len(refs), 64):
        metric.add_batch(predictions=preds[start : start + 64], references=refs[start : start + 64])
    got = metric.compute()
    assert got == {"accuracy": sum(p == r for p, r in zip(preds, refs)) / len(refs)}


def test_group_names_are_required_with_class_to_group(metric):
    with pytest.raises(ValueError, match="class_to_group was given without group_names"):
        metric.compute(predictions=[0, 1], references=[0, 1], class_to_group=[0, 1])
    with pytest.raises(ValueError, match=r"outside 0..1"):
        metric.compute(predictions=[0, 2], references=[0, 1], class_to_group=[0, 1], group_names=["a", "b"])


def test_fresh_process_with_empty_modules_cache(tmp_path):
    """A new user: evaluate.load of the packaged path, offline, into an empty cache, from another cwd. The package and
    its programs import without matplotlib (about 1 s of every process start), which the first plot imports."""
    code = (
        "import json, sys, evaluate, ltkd_hf.evaluation as E, ltkd_hf.cli.distill, ltkd_hf.cli.table\n"
        "print('matplotlib' in sys.modules)\n"
        "m = evaluate.load(E.GROUP_ACCURACY_PATH)\n"
        "print(json.dumps(m.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2],"
        " class_to_group=[0, 1, 1], group_names=['head', 'tail'])))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-2] == "False"  # no matplotlib before a plot
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "accuracy": 0.75, "accuracy_head": 1.0, "accuracy_tail": 2 / 3,
    }
    copies = list((tmp_path / "hf" / "modules" / "evaluate_modules").rglob("group_accuracy.py"))
    assert len(copies) == 1
