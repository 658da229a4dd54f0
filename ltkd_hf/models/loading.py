"""Teacher loading (frozen, eval, safe weights first), the teacher/dataset check, and student creation."""

import difflib
import json
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from accelerate.utils import extract_model_from_parallel
from timm.models import get_pretrained_cfg, load_state_dict
from torch import nn
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

__all__ = ["check_teacher_matches", "create_student", "load_teacher", "unwrap_timm"]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_SAFE_SUFFIX = ".safetensors"


def _require_model_name(argument: str, name: str) -> None:
    """Raise a ValueError naming close timm names (and the ``import ltkd_hf`` rule) for an unknown name."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ValueError(
        f"{argument}={name!r} is not a registered timm architecture.{hint} The CIFAR architectures "
        f"(cifar_resnet8x4, cifar_wrn_40_2, ...) are registered only after `import ltkd_hf`; "
        f"a folder must exist on disk, a Hub model needs the 'hf-hub:' prefix."
    )


def _is_pickle(path: Path) -> bool:
    return any(str(path).endswith(suffix) for suffix in _PICKLE_SUFFIXES)


def _read_state_dict(path: Path, allow_unsafe_pickle: bool) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict; pickles only with the opt-in, tensors-only unpickling tried first."""
    if str(path).endswith(_SAFE_SUFFIX):
        return load_state_dict(str(path))
    if not _is_pickle(path):
        raise ValueError(
            f"checkpoint={str(path)!r} has an unknown extension: expected a {_SAFE_SUFFIX} file "
            f"(or a pickled {'/'.join(_PICKLE_SUFFIXES)} file with allow_unsafe_pickle=True)."
        )
    if not allow_unsafe_pickle:
        raise ValueError(
            f"checkpoint={str(path)!r} is a pickle, and unpickling a file can run arbitrary code. "
            f"Convert it to {_SAFE_SUFFIX} (safetensors.torch.save_file(state_dict, 'model.safetensors')), "
            f"or, if you trust its origin, pass allow_unsafe_pickle=True."
        )
    try:
        return load_state_dict(str(path), weights_only=True)
    except RuntimeError as error:
        # timm re-raises a refused tensors-only unpickling as RuntimeError; other errors are real.
        if not isinstance(error.__cause__, pickle.UnpicklingError):
            raise
        warnings.warn(f"Unpickling {path} with weights_only=False because allow_unsafe_pickle=True.", stacklevel=3)
        return load_state_dict(str(path), weights_only=False)


def _strip_wrapper_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a TimmWrapper checkpoint (``timm_model.<key>``, as Trainer saves it) as the timm model's."""
    prefix = "timm_model."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def _load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], checkpoint: str) -> None:
    """Strictly load ``state_dict`` into ``model``; a mismatch raises a ValueError that lists it."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        architecture = model.pretrained_cfg.get("architecture", type(model).__name__)
        raise ValueError(
            f"checkpoint={checkpoint!r} does not fit architecture {architecture!r}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, shape mismatches {mismatched[:5]}. "
            f"Pass the architecture the checkpoint was trained with (and num_classes= if its classifier differs)."
        )
    model.load_state_dict(state_dict)


def _checkpoint_classes(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> int | None:
    classifier = model.pretrained_cfg.get("classifier")
    weight = state_dict.get(f"{classifier}.weight") if classifier else None
    return None if weight is None else int(weight.shape[0])


def _check_folder(path: Path, argument: str, source: str, allow_unsafe_pickle: bool) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{argument}={source!r}: folder {str(path)!r} does not exist.")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{argument}={source!r}: {str(path / 'config.json')!r} does not exist; a model folder needs "
            f"config.json + model.safetensors (timm's save_for_hf layout, or ltkd_hf's saved students)."
        )
    if not (path / "model.safetensors").is_file():
        pickles = sorted(p.name for p in path.iterdir() if _is_pickle(p))
        if not pickles:
            raise FileNotFoundError(f"{argument}={source!r}: no model.safetensors in {str(path)!r}.")
        if not allow_unsafe_pickle:
            raise ValueError(
                f"{argument}={source!r} holds pickled weights only ({', '.join(pickles)}), and unpickling a file "
                f"can run arbitrary code. Save the weights as model.safetensors, or, if you trust its origin, "
                f"pass allow_unsafe_pickle=True."
            )


def _load_wrapper_folder(path: Path) -> nn.Module:
    """A timm model from a transformers TimmWrapper folder (``save_pretrained``, Trainer checkpoints)."""
    config = json.loads((path / "config.json").read_text())
    architecture = config.get("architecture", "")
    _require_model_name(f"architecture in {str(path / 'config.json')!r}", architecture)
    label_names = config.get("label_names")
    if label_names is None and config.get("id2label"):
        label_names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    num_classes = config.get("num_classes") or config.get("num_labels") or len(label_names or [])
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    model = timm.create_model(architecture, num_classes=num_classes, **model_args)
    weights = path / "model.safetensors"
    _load_weights(model, _strip_wrapper_prefix(load_state_dict(str(weights))), str(weights))
    if label_names is not None:
        model.pretrained_cfg["label_names"] = list(label_names)
    return model


def _looks_like_path(source: str) -> bool:
    return not source.startswith(("hf-hub:", "local-dir:")) and (
        os.sep in source or "/" in source or source.startswith((".", "~"))
    )


def _has_published_weights(name: str) -> bool:
    cfg = get_pretrained_cfg(name, allow_unregistered=True)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)


def _check_loaded_classes(model: nn.Module, num_classes: int | None, source: str) -> None:
    if num_classes is not None and model.num_classes != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the teacher from source={source!r} has {model.num_classes} classes; "
            f"a teacher's classifier cannot be resized. Use a teacher trained on this dataset's classes."
        )


def load_teacher(
    source: str,
    *,
    checkpoint: str | None = None,
    num_classes: int | None = None,
    allow_unsafe_pickle: bool = False,
) -> nn.Module:
    """A frozen timm teacher in eval mode.

    Args:
        source: a timm architecture name (weights from ``checkpoint``, else timm's published ones),
            ``"local-dir:<path>"``,
            ``"hf-hub:<repo id>"``, or the path of a model folder (config.json + model.safetensors, in
            timm's layout or transformers' TimmWrapper layout).
        checkpoint: with an architecture name, a ``.safetensors`` state dict of that model
            (pickled ``.pt``/``.pth``/``.bin`` files need ``allow_unsafe_pickle``).
        num_classes: classifier size; by default read from the checkpoint or the folder's config.
            A folder or Hub model with another size raises instead of silently re-initialising
            the classifier.
        allow_unsafe_pickle: allow unpickling a checkpoint (tensors-only unpickling is tried first).

    Returns:
        The timm model, with ``requires_grad`` False everywhere and in eval mode.
    """
    if _looks_like_path(source) and not os.path.exists(source):
        raise FileNotFoundError(f"source={source!r} does not exist (expected a model folder or a timm name).")
    if os.path.isfile(source):
        raise ValueError(
            f"source={source!r} is a file: pass the architecture name as source and this file as checkpoint= "
            f"(e.g. load_teacher('cifar_resnet32x4', checkpoint={source!r}))."
        )
    if source.startswith(("hf-hub:", "local-dir:")) or os.path.isdir(source):
        if checkpoint is not None:
            raise ValueError(
                f"checkpoint={checkpoint!r} was given with source={source!r}, which carries its own weights: "
                f"pass checkpoint only with an architecture name."
            )
        folder = None if source.startswith("hf-hub:") else Path(source.removeprefix("local-dir:"))
        if folder is not None:
            _check_folder(folder, "source", source, allow_unsafe_pickle)
        if folder is not None and json.loads((folder / "config.json").read_text()).get("model_type") == "timm_wrapper":
            # transformers' layout: timm cannot read its config.json (lesson 6 of DESIGN.md).
            if not (folder / "model.safetensors").is_file():
                raise ValueError(f"source={source!r}: a transformers folder must hold model.safetensors.")
            model = _load_wrapper_folder(folder)
        else:
            model = timm.create_model(source if folder is None else f"local-dir:{folder}", pretrained=True)
        _check_loaded_classes(model, num_classes, source)
    elif checkpoint is None:
        _require_model_name("source", source)
        if not _has_published_weights(source):
            raise ValueError(
                f"source={source!r} has no published weights: pass checkpoint='<file>.safetensors' "
                f"(an untrained teacher would distill noise), or use a 'local-dir:'/'hf-hub:' model."
            )
        model = timm.create_model(source, pretrained=True)
        _check_loaded_classes(model, num_classes, source)
    else:
        _require_model_name("source", source)
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint={checkpoint!r} does not exist.")
        state_dict = _strip_wrapper_prefix(_read_state_dict(Path(checkpoint), allow_unsafe_pickle))
        model = timm.create_model(source, **({} if num_classes is None else {"num_classes": num_classes}))
        found = _checkpoint_classes(model, state_dict)
        if num_classes is None and found is not None and found != model.num_classes:
            model.reset_classifier(found)
        _load_weights(model, state_dict, checkpoint)
    return model.requires_grad_(False).eval()


def _teacher_label_names(teacher: nn.Module) -> list[str] | None:
    """The teacher's class names in logit order; None when it has none or only transformers' LABEL_i."""
    id2label = getattr(getattr(extract_model_from_parallel(teacher), "config", None), "id2label", None)
    if id2label:
        names = [id2label[i] for i in range(len(id2label))]
    else:
        names = getattr(unwrap_timm(teacher), "pretrained_cfg", {}).get("label_names")
        if isinstance(names, dict):  # timm accepts {index: name}
            names = [names[k] for k in sorted(names, key=int)]
    if names is None or [str(n) for n in names] == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return [str(n) for n in names]


def check_teacher_matches(teacher: nn.Module, *, num_classes: int, label_names: Sequence[str] | None) -> None:
    """Raise a ValueError unless the teacher predicts the dataset's classes, in the dataset's order.

    The class count must equal ``num_classes``; when both the teacher (timm ``pretrained_cfg["label_names"]``
    or a transformers config's ``id2label``) and the dataset have label names, they must be equal in order.
    """
    teacher_classes = unwrap_timm(teacher).num_classes
    if teacher_classes != num_classes:
        raise ValueError(
            f"The teacher predicts {teacher_classes} classes but the dataset has num_classes={num_classes}. "
            f"Use a teacher trained on this dataset's classes."
        )
    names = _teacher_label_names(teacher)
    if names is None or label_names is None:
        return
    mismatches = [
        f"class {i}: teacher {t!r} vs dataset {d!r}" for i, (t, d) in enumerate(zip(names, label_names)) if t != d
    ]
    if mismatches:
        raise ValueError(
            f"The teacher's label names differ from the dataset's (label_names) at {len(mismatches)} of "
            f"{num_classes} classes: {'; '.join(mismatches[:5])}. The teacher's logits must index the dataset's "
            f"classes: remap the dataset's labels to the teacher's order, or use a teacher trained with this order."
        )


def unwrap_timm(model: nn.Module) -> nn.Module:
    """The bare timm model inside a transformers TimmWrapper model (and any DDP / torch.compile wrapper)."""
    inner = extract_model_from_parallel(model)
    inner = getattr(inner, "timm_model", inner)
    if not hasattr(inner, "num_classes") or not hasattr(inner, "forward_head"):
        raise ValueError(f"model of type {type(model).__name__} is neither a timm model nor a TimmWrapper model.")
    return inner


def create_student(
    architecture: str,
    *,
    num_classes: int,
    label_names: Sequence[str] | None = None,
    **model_kwargs: Any,
) -> TimmWrapperForImageClassification:
    """A freshly initialised timm model wrapped for ``transformers.Trainer``.

    ``forward(pixel_values, labels=None)`` returns an ``ImageClassifierOutput`` with (B, num_classes)
    logits and, given labels, the cross-entropy loss. ``config.id2label`` / ``label2id`` carry
    ``label_names`` (``"LABEL_i"`` when None). ``model_kwargs`` go to ``timm.create_model``.
    """
    _require_model_name("architecture", architecture)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least 1 class.")
    if model_kwargs.get("pretrained"):
        raise ValueError(
            "pretrained=True: a student is created untrained (transformers' TimmWrapper builds it without "
            "weights); drop pretrained, or copy trained weights into unwrap_timm(student) yourself."
        )
    labels = {}
    if label_names is not None:
        if len(label_names) != num_classes:
            raise ValueError(
                f"label_names has {len(label_names)} names but num_classes={num_classes}: give one name per class."
            )
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names has duplicates ({list(label_names)[:10]}...): class names must be unique.")
        labels = {
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }
    config = TimmWrapperConfig(
        architecture=architecture, num_labels=num_classes, model_args=model_kwargs or None, **labels
    )
    student = TimmWrapperForImageClassification(config)
    # transformers re-initialises every conv/linear with normal(0, 0.02); restore the architecture's own
    # initialisation (e.g. Kaiming for the CIFAR ResNets), which the recipes' accuracies depend on.
    fresh = timm.create_model(architecture, num_classes=num_classes, **model_kwargs)
    student.timm_model.load_state_dict(fresh.state_dict())
    return student
