"""The canonical student folder: save it once, load it with timm, transformers or ``pipeline``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import timm
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf  # timm exports it only from _hub
from torch import nn

from ..models.hub_source import is_repo_id
from ..models.loading import unwrap_timm
from .._atomic import atomic_write_files

__all__ = ["save_student", "load_student", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

# Keys timm or transformers read from config.json; extra_config must not shadow them.
_RESERVED_KEYS = frozenset(
    {
        "architecture", "num_classes", "num_features", "global_pool", "label_names", "label_descriptions",
        "model_args", "pretrained_cfg", "model_type", "num_labels", "id2label", "label2id",
    }
)


def _write_config(
    path: Path,
    timm_model: nn.Module,
    label_names: list[str],
    extra_config: dict[str, Any],
    data_config: dict[str, Any] | None,
) -> None:
    """Write config.json: timm's own export, adjusted so that transformers' TimmWrapper loads it too."""
    save_config_for_hf(timm_model, str(path), model_config={"label_names": label_names}, data_config=data_config)
    config = json.loads(path.read_text(encoding="utf-8"))
    # transformers' TimmWrapper calls timm.create_model(arch, num_classes=num_labels, **model_args): a
    # num_classes inside model_args is passed twice and crashes it. timm reads num_classes from the root.
    config.get("model_args", {}).pop("num_classes", None)
    config.update(extra_config)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def save_student(
    model: nn.Module,
    output_dir: str | os.PathLike,
    *,
    label_names: Sequence[str],
    extra_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
) -> Path:
    """Save a student as ``model.safetensors`` (timm key names) + ``config.json`` in ``output_dir``.

    The folder loads with ``timm.create_model("local-dir:<dir>", pretrained=True)``,
    ``AutoModelForImageClassification.from_pretrained(<dir>)`` and ``pipeline("image-classification",
    model=<dir>)``, all giving the same logits. ``model`` is a timm model or a transformers
    ``TimmWrapperForImageClassification``. ``label_names`` name the classes in index order.
    ``extra_config`` adds JSON keys to config.json (e.g. ``{"ltkd": {...}}`` provenance); ``data_config``
    overrides the preprocessing recorded for the image processor (``input_size``, ``mean``, ``std``,
    ``crop_pct``, ...), as timm's ``save_for_hf`` does. Files are replaced atomically: an interrupted save
    leaves the previous folder as it was. Returns the folder.
    """
    timm_model = unwrap_timm(model)
    num_classes = getattr(timm_model, "num_classes", None)
    if label_names is None or isinstance(label_names, str):
        raise ValueError(
            f"label_names={label_names!r}: pass one name per output class, in class-index order (a list of "
            f"{num_classes}: the card, pipeline and id2label name the classes with them)."
        )
    label_names = [str(name) for name in label_names]
    if len(label_names) != num_classes:
        raise ValueError(
            f"label_names has {len(label_names)} names but the model has num_classes={num_classes}; "
            "pass one name per output class, in class-index order."
        )
    extra_config = dict(extra_config or {})
    clash = sorted(_RESERVED_KEYS.intersection(extra_config))
    if clash:
        raise ValueError(
            f"extra_config keys {clash} would overwrite what timm/transformers read from config.json; "
            "namespace them, e.g. extra_config={'ltkd': {...}}."
        )
    try:
        json.dumps(extra_config, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"extra_config must be JSON-serializable (plain dicts, lists, str, numbers): {err}.") from err

    # clone: safetensors refuses tensors that share storage, and the file must not alias live weights
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in timm_model.state_dict().items()}

    def write_weights(path: Path) -> None:
        save_file(tensors, str(path), metadata={"format": "pt"})

    def write_config(path: Path) -> None:
        _write_config(path, timm_model, label_names, extra_config, data_config)

    return atomic_write_files(output_dir, {WEIGHTS_NAME: write_weights, CONFIG_NAME: write_config})


def _timm_name(path_or_id: str) -> str:
    """The ``timm.create_model`` name for a local student folder or a Hub id."""
    if path_or_id.startswith(("hf-hub:", "local-dir:")):
        path_or_id = path_or_id.split(":", 1)[1]
    local = Path(path_or_id).expanduser()
    if local.is_dir():
        if not (local / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"path_or_id={path_or_id!r} is a folder without {CONFIG_NAME}; pass a folder written by "
                "ltkd_hf.save_student (config.json + model.safetensors)."
            )
        return f"local-dir:{local}"
    if local.exists():
        raise ValueError(f"path_or_id={path_or_id!r} is a file; pass the student's folder or a Hub id 'owner/name'.")
    if path_or_id.startswith((".", "/", "~")) or not is_repo_id(path_or_id.split("@", 1)[0]):
        raise FileNotFoundError(
            f"path_or_id={path_or_id!r} is neither an existing folder nor a Hub id of the form 'owner/name'; "
            "check the path, or pass the repo id the student was pushed to."
        )
    return f"hf-hub:{path_or_id}"


def load_student(path_or_id: str) -> nn.Module:
    """Load a saved student (local folder or Hub id ``owner/name[@revision]``) as a timm model in eval mode."""
    name = _timm_name(str(path_or_id))
    try:
        model = timm.create_model(name, pretrained=True)
    except RuntimeError as err:
        # timm says "Unknown model (arch)" for an architecture that no imported module registered;
        # for the paper's CIFAR networks that means ltkd_hf (or a version holding them) is not imported.
        match = re.search(r"Unknown model \(([^)]*)\)", str(err))
        if match is None:
            raise
        arch = match.group(1)
        hint = (
            "The cifar_* architectures are registered by `import ltkd_hf` (done here already, so this "
            "ltkd_hf version does not define it: upgrade ltkd_hf)."
            if arch.startswith("cifar_")
            else f"If it is a timm architecture, upgrade timm (installed: {timm.__version__}); "
            "if it comes from ltkd_hf, `import ltkd_hf` first."
        )
        raise ValueError(f"path_or_id={path_or_id!r} holds a student with architecture {arch!r}, which timm "
                         f"does not know. {hint}") from err
    return model.eval()
