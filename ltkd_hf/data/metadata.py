"""The ltkd_hf record that travels inside a dataset's ``info.description``.

``datasets`` keeps ``DatasetInfo.description`` through ``select``, ``map``, ``filter``, ``cast`` and
``save_to_disk``/``load_from_disk``, so a JSON object stored there reaches the trainer, the groups and
the model card without a side file. The dataset's own description is kept under ``"description"``.
"""

from __future__ import annotations

import json
from typing import Any

from datasets import Dataset

_KEY = "ltkd_hf"


def read_record(dataset: Dataset) -> dict[str, Any]:
    """The ltkd_hf record stored in ``dataset``, or ``{}`` when there is none."""
    try:
        payload = json.loads(dataset.info.description or "")
    except ValueError:
        return {}
    if isinstance(payload, dict) and isinstance(payload.get(_KEY), dict):
        return payload[_KEY]
    return {}


def _original_description(dataset: Dataset) -> str:
    text = dataset.info.description or ""
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    if isinstance(payload, dict) and _KEY in payload:
        return str(payload.get("description", ""))
    return text


def with_record(dataset: Dataset, **fields: Any) -> Dataset:
    """A view of ``dataset`` (same rows) whose record is updated with ``fields``; ``dataset`` is untouched."""
    record = {**read_record(dataset), **fields}
    description = json.dumps({_KEY: record, "description": _original_description(dataset)})
    # select(range(n)) is a new Dataset over the same Arrow table (no row copy) with its own copy of
    # the info, so the caller's dataset keeps its description.
    view = dataset.select(range(len(dataset)))
    view.info.description = description
    return view
