"""What a saved model's config.json records about its training (``ltkd.settings``), and the checks that read it: a
model is never scored on the split it trained on, and no teacher or starting checkpoint was trained on the images a
run tests on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from ..data import SplitInfo
from ..models import parse_hub_source
from ..models.hub_source import HUB_PREFIX, hub_config

logger = logging.getLogger("ltkd_hf.cli")


def recorded_config(model: str) -> dict:
    """The config.json of a student folder or Hub id."""
    if Path(model).is_dir():
        path = Path(model) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"--model {model}: the folder holds no config.json; pass a saved student folder.")
    elif Path(model).expanduser().exists() or model.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"--model {model}: no such folder; pass a saved student folder or a Hub model id.")
    else:
        try:
            repo_id, revision = parse_hub_source(model) if model.startswith(HUB_PREFIX) else (model, None)
        except ValueError as err:
            raise ValueError(f"--model {model}: {err}") from None
        try:
            path = Path(hf_hub_download(repo_id, "config.json", revision=revision))
        except (HFValidationError, EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
            raise FileNotFoundError(
                f"--model {model}: neither a folder nor a reachable Hub model ({type(err).__name__}); pass a saved "
                "student folder or a Hub model (hf-hub:<owner>/<name>[@<revision>], or the bare id; offline mode "
                "needs it in the local cache)."
            ) from None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"--model {model}: {path} is not valid JSON ({err}); pass a saved student folder.") from None


def recorded_settings(config: dict) -> dict:
    """The settings a saved folder's config.json records (empty for a model ltkd_hf did not train)."""
    return (config.get("ltkd") or {}).get("settings") or {}


def recorded_split(data: dict) -> SplitInfo:
    """The training split a saved folder's ``data`` settings record (`recorded_settings`' ``"data"``)."""
    return SplitInfo.from_dict({k: v for k, v in data.items() if k in SplitInfo.__dataclass_fields__})


def trained_on(data: dict, source: str | None, split: str | None) -> bool:
    """Whether the training data a model records (``data``) is the split ``split`` of ``source``: a folder however it
    is spelt, a Hub id or ``builtin:`` name as it is."""
    trained = data.get("source")
    if trained is None or source is None or split is None:
        return False
    return Path(trained).resolve() == Path(source).resolve() and data.get("train_split") == split


def training_data(source: str) -> dict:
    """The training data a loaded model records: a saved folder's (plain or ``local-dir:``) or an ``hf-hub:`` repo's
    config.json (already in the cache: the model was loaded from it); empty for a timm name (with or without a
    checkpoint) or a model ltkd_hf did not train."""
    folder = Path(source.removeprefix("local-dir:")).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
    elif source.startswith(HUB_PREFIX):
        path = hub_config(source).path
    else:
        return {}
    return recorded_settings(json.loads(path.read_text())).get("data") or {} if path.is_file() else {}


def refuse_trained_on_test(flag: str, source: str, info: SplitInfo) -> dict:
    """Refuse a model given by ``flag`` (a teacher, or the checkpoint a model starts from) that was trained on this
    run's test split of the same source: the students would learn the test images' labels from it, and every
    accuracy of the report would be on images it was taught. Returns the training data it records."""
    data = training_data(source)
    if trained_on(data, info.source, info.test_split):
        raise ValueError(
            f"{flag} {source}: was trained on the split {info.test_split!r} of {info.source}, which this run scores "
            "as its test split, so the students would learn the test images' labels from it and the report would "
            f"not be held out; pass a model trained on the training split ({info.train_split!r})."
        )
    return data


def check_teacher_data(teacher: str, info: SplitInfo) -> None:
    """`refuse_trained_on_test` for ``--teacher``, and a warning when it was trained on another construction of this
    run's training split (another imbalance factor, seed or held-out validation): it saw training images this
    split leaves out, so it is not the teacher biased by this split."""
    data = refuse_trained_on_test("--teacher", teacher, info)
    recorded = {key: data.get(key) for key in ("long_tail", "validation_holdout")}
    if trained_on(data, info.source, info.train_split) and recorded != {
            "long_tail": info.long_tail, "validation_holdout": info.validation_holdout}:
        made = recorded_split(data)
        logger.warning("--teacher %s was trained on another construction of the split %r of %s (%s), not this run's "
                       "(%s): it saw training images this split leaves out, so it is not the teacher this long-tailed "
                       "split biases.", teacher, info.train_split, info.source, made.describe(), info.describe())
