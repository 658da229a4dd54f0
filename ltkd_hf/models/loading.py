"""Teacher loading (frozen, eval, safe weights first), the teacher/dataset check, and student creation."""

import copy
import dataclasses
import difflib
import json
import os
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from accelerate.utils import extract_model_from_parallel
from timm.layers import to_2tuple
from timm.models import PretrainedCfg, filter_pretrained_cfg, get_pretrained_cfg, load_state_dict
from timm.models._hub import hf_split  # timm exports it only from _hub
from torch import nn
from transformers import (AutoConfig, AutoModelForImageClassification, TimmWrapperConfig,
                          TimmWrapperForImageClassification)

from .hub_source import HUB_PREFIX, hub_config, hub_file, is_repo_id, parse_hub_source, require_hub_safetensors

__all__ = ["check_teacher_matches", "create_student", "label_names_of", "load_classifier", "load_teacher",
           "unwrap_timm"]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_SAFE_SUFFIX = ".safetensors"
_LOCAL_PREFIX = "local-dir:"


def _require_model_name(
    argument: str, name: str, others: str = "a folder must exist on disk, a Hub model needs the 'hf-hub:' prefix"
) -> None:
    """Raise a ValueError naming close timm names (and the ``import ltkd_hf`` rule) for an unknown name;
    ``others`` says how the caller's other kinds of source are written."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ValueError(
        f"{argument}={name!r} is not a registered timm architecture.{hint} The CIFAR architectures "
        f"(cifar_resnet8x4, cifar_wrn_40_2, ...) are registered only after `import ltkd_hf`; {others}."
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


# The pretrained_cfg keys a config.json may set for a model built here: no weight source (the weights are read
# from the folder), no state dict.
_CFG_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg)) - {
    "url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source"
}


def _wrapper_cfg_overlay(config: dict[str, Any]) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` for a model from a transformers TimmWrapper config.json: its
    ``pretrained_cfg`` (students from ``create_student`` save one), else at least the input size its model_args
    set (``img_size``, ``in_chans``), so ``resolve_data_config`` sees the size the model takes."""
    args = config.get("model_args") or {}
    saved = {**(args.get("pretrained_cfg_overlay") or {}), **(config.get("pretrained_cfg") or {})}
    overlay = {k: v for k, v in saved.items() if k in _CFG_FIELDS}
    if "input_size" not in overlay and (args.get("img_size") is not None or args.get("in_chans") is not None):
        registered = get_pretrained_cfg(config["architecture"])
        size = tuple(registered.input_size) if registered is not None else (3, 224, 224)
        spatial = size[1:] if args.get("img_size") is None else to_2tuple(args["img_size"])
        overlay["input_size"] = (int(args.get("in_chans") or size[0]), *(int(v) for v in spatial))
    for key in ("input_size", "mean", "std"):
        if overlay.get(key) is not None:
            overlay[key] = tuple(overlay[key])
    return overlay


def _wrapper_model_args(config: dict[str, Any]) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments a TimmWrapper config.json records, less the class count and the
    ``pretrained_cfg_overlay`` (a student created with one records it there; `_wrapper_cfg_overlay` takes it in)."""
    args = config.get("model_args") or {}
    return {k: v for k, v in args.items() if k not in ("num_classes", "pretrained_cfg_overlay")}


def _load_wrapper_folder(path: Path) -> nn.Module:
    """A timm model from a transformers TimmWrapper folder (``save_pretrained``, Trainer checkpoints)."""
    config = json.loads((path / "config.json").read_text())
    architecture = config.get("architecture", "")
    _require_model_name(f"architecture in {str(path / 'config.json')!r}", architecture)
    label_names = config.get("label_names")
    if label_names is None and config.get("id2label"):
        label_names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    num_classes = config.get("num_classes") or config.get("num_labels") or len(label_names or [])
    overlay = _wrapper_cfg_overlay(config)
    model = timm.create_model(
        architecture, num_classes=num_classes, pretrained_cfg_overlay=overlay, **_wrapper_model_args(config)
    )
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
        hub = f"; a Hub model needs the 'hf-hub:' prefix: 'hf-hub:{source}'" if is_repo_id(source) else ""
        raise FileNotFoundError(f"source={source!r} does not exist (expected a model folder or a timm name{hub}).")
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
        model = _load_saved_model(source, allow_unsafe_pickle)
        _check_loaded_classes(model, num_classes, source)
    elif checkpoint is None:
        _require_model_name("source", source)
        if not _has_published_weights(source):
            raise ValueError(
                f"source={source!r} has no published weights: pass checkpoint='<file>.safetensors' (the recipes: "
                "--teacher_checkpoint FILE; an untrained teacher would distill noise), or use a 'local-dir:'/'hf-hub:' "
                "model or a saved folder."
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


def _load_saved_model(source: str, allow_unsafe_pickle: bool) -> nn.Module:
    """The timm model of a model folder or an ``hf-hub:`` repo (at the commit its revision points at now), in timm's
    layout or transformers' TimmWrapper layout, with its weights."""
    hub = hub_config(source) if source.startswith(HUB_PREFIX) else None
    if hub is None:
        folder = Path(source.removeprefix(_LOCAL_PREFIX))
        _check_folder(folder, "source", source, allow_unsafe_pickle)
        timm_name = f"{_LOCAL_PREFIX}{folder}"
    else:
        folder, timm_name = hub.path.parent, hub.pinned
    if _read_json(folder / "config.json", source).get("model_type") != "timm_wrapper":
        return timm.create_model(timm_name, pretrained=True)
    # transformers' layout: timm cannot read its config.json; a repo's weights into the same commit's folder
    if hub is not None:
        hub_file(source, hub.repo_id, "model.safetensors", hub.commit)
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"source={source!r}: a transformers TimmWrapper model must hold model.safetensors.")
    return _load_wrapper_folder(folder)


def label_names_of(model: nn.Module) -> list[str] | None:
    """A classifier's class names in logit order (a transformers config's ``id2label``, else timm's
    ``pretrained_cfg["label_names"]``); None when it has none, or only transformers' placeholder ``LABEL_i``."""
    id2label = getattr(getattr(extract_model_from_parallel(model), "config", None), "id2label", None)
    timm_names = getattr(unwrap_timm(model), "pretrained_cfg", {}).get("label_names")
    if isinstance(timm_names, dict):  # timm accepts {index: name}
        timm_names = [timm_names[k] for k in sorted(timm_names, key=int)]
    for names in ([id2label[i] for i in range(len(id2label))] if id2label else None, timm_names):
        if names and [str(n) for n in names] != [f"LABEL_{i}" for i in range(len(names))]:
            return [str(n) for n in names]
    return None


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
    names = label_names_of(teacher)
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


def load_classifier(path_or_id: str) -> nn.Module:
    """``AutoModelForImageClassification.from_pretrained(path_or_id)`` (a folder, a Hub id, or
    ``hf-hub:<owner>/<name>[@<revision>]`` as the other loaders take it) in eval mode, its timm model given the
    ``pretrained_cfg`` of the folder's config.json. transformers builds the timm model from the architecture alone,
    so without it ``resolve_data_config(model=unwrap_timm(model))`` would see the architecture's default input size
    and normalisation (32 px for the CIFAR models), not those the model was trained with (the demo's 16 px)."""
    name, revision = parse_hub_source(path_or_id) if path_or_id.startswith(HUB_PREFIX) else (path_or_id, None)
    config = AutoConfig.from_pretrained(name, revision=revision)
    if getattr(config, "model_args", None):  # timm's save_for_hf records num_classes, which the wrapper passes too
        config.model_args = {k: v for k, v in config.model_args.items() if k != "num_classes"}
    model = AutoModelForImageClassification.from_pretrained(name, revision=revision, config=config).eval()
    inner = unwrap_timm(model)
    inner.pretrained_cfg = inner.default_cfg = {**inner.pretrained_cfg, **_wrapper_cfg_overlay(model.config.to_dict())}
    return model


@dataclass
class _Start:
    """What ``create_student`` starts from: the name timm builds, or a transformers TimmWrapper folder."""

    name: str  # for timm.create_model (a timm name, "hf-hub:...", "local-dir:..."), or the wrapper's architecture
    config: dict[str, Any] | None = None  # the checkpoint's config.json
    wrapper_folder: Path | None = None  # a transformers TimmWrapper folder (config model_type "timm_wrapper")
    hub_id: str | None = None  # the Hub repo the weights come from
    revision: str | None = None
    recorded: str | None = None  # the source as recorded in the student's config


def _read_json(path: Path, source: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"source={source!r}: {str(path)!r} is not valid JSON ({error}).") from None
    if not isinstance(config, dict) or not config.get("architecture"):
        model_type = config.get("model_type") if isinstance(config, dict) else None
        what = f"a transformers {model_type!r} model, not a timm one" if model_type else "no 'architecture'"
        raise ValueError(
            f"source={source!r}: {str(path)!r} names {what}; ltkd_hf's models are timm models: a folder or repo "
            f"with timm's config.json (timm.models.save_for_hf, ltkd_hf.save_student) or transformers' TimmWrapper "
            f"one (save_pretrained of a timm model, e.g. a Trainer checkpoint of ltkd_hf)."
        )
    return config


def _local_start(source: str, pretrained: bool) -> _Start:
    folder = Path(source[len(_LOCAL_PREFIX):]).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"source={source!r}: folder {str(folder)!r} does not exist; 'local-dir:' takes a model folder "
            f"(config.json + model.safetensors)."
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"source={source!r}: {str(folder / 'config.json')!r} does not exist; a model folder needs config.json "
            f"+ model.safetensors (timm's save_for_hf layout, ltkd_hf's saved students, transformers' save_pretrained)."
        )
    if pretrained and not (folder / "model.safetensors").is_file():
        pickles = sorted(p.name for p in folder.iterdir() if _is_pickle(p))
        if pickles:
            raise ValueError(
                f"source={source!r} holds pickled weights only ({', '.join(pickles)}); a student starts only from "
                f"safetensors (unpickling a file can run arbitrary code). Convert them: "
                f"safetensors.torch.save_file(state_dict, '{folder / 'model.safetensors'}')."
            )
        raise FileNotFoundError(f"source={source!r}: no model.safetensors in {str(folder)!r}.")
    config = _read_json(folder / "config.json", source)
    wrapper = folder if config.get("model_type") == "timm_wrapper" else None
    name = config["architecture"] if wrapper else f"{_LOCAL_PREFIX}{folder}"
    return _Start(name, config, wrapper, recorded=f"{_LOCAL_PREFIX}{folder}")


def _hub_start(source: str, pretrained: bool) -> _Start:
    hub = hub_config(source)
    config = _read_json(hub.path, source)
    if config.get("model_type") == "timm_wrapper":  # transformers' layout: timm cannot read its config.json
        if pretrained and hub_file(source, hub.repo_id, "model.safetensors", hub.commit) is None:
            raise ValueError(
                f"source={source!r}: the Hub repo {hub.repo_id!r} holds no model.safetensors; a student starts only "
                f"from safetensors (unpickling a file can run arbitrary code)."
            )
        return _Start(config["architecture"], config, hub.path.parent, hub.repo_id, hub.commit, hub.pinned)
    if pretrained:
        require_hub_safetensors(source, hub.repo_id, hub.commit, config.get("pretrained_cfg") or {})
    return _Start(hub.pinned, config, None, hub.repo_id, hub.commit, hub.pinned)


def _timm_start(source: str, pretrained: bool) -> _Start:
    if _looks_like_path(source):
        raise ValueError(
            f"source={source!r} looks like a path or a Hub id, not a timm name: write 'local-dir:{source}' for a "
            f"model folder, or 'hf-hub:{source}' for a Hub model."
        )
    _require_model_name("source", source, "a folder needs the 'local-dir:' prefix, a Hub model the 'hf-hub:' prefix")
    try:
        cfg = get_pretrained_cfg(source)
    except RuntimeError as error:  # an unknown pretrained tag
        architecture = source.split(".", 1)[0]
        tags = ", ".join(timm.list_pretrained(f"{architecture}.*")[:10]) or "none"
        raise ValueError(f"source={source!r}: {error} Published weights of {architecture!r}: {tags}.") from None
    if not pretrained:
        return _Start(source)
    if cfg is None or not cfg.hf_hub_id:
        where = cfg and (cfg.url or cfg.file)
        reason = f"are published only at {where}, not as safetensors on the Hub" if where else "are not published"
        raise ValueError(
            f"source={source!r} with pretrained=True: its weights {reason}. Drop pretrained (a fresh student), or "
            f"start from a 'local-dir:'/'hf-hub:' folder with config.json + model.safetensors."
        )
    repo_id, revision = hf_split(cfg.hf_hub_id)
    require_hub_safetensors(source, repo_id, revision, cfg.to_dict())
    return _Start(source, None, None, repo_id, revision, source)


def _names_of(label_names: Any) -> list[str] | None:
    if isinstance(label_names, dict):  # timm accepts {index: name}
        label_names = [label_names[k] for k in sorted(label_names, key=int)]
    return None if not label_names else [str(name) for name in label_names]


def _wrapper_label_names(config: dict[str, Any]) -> list[str] | None:
    names = _names_of(config.get("label_names"))
    if names is None and config.get("id2label"):
        names = _names_of({int(k): v for k, v in config["id2label"].items()})
    return names


def _build_from_wrapper(start: _Start, pretrained: bool, num_classes: int, model_kwargs: dict) -> nn.Module:
    """A timm model from a transformers TimmWrapper folder, through timm's own pretrained loading (its checkpoint
    filter resamples a ViT's position embeddings for another img_size)."""
    config, folder = start.config, start.wrapper_folder
    _require_model_name(f"architecture in {str(folder / 'config.json')!r}", start.name)
    kwargs = {**_wrapper_model_args(config), **model_kwargs}
    overlay = {**_wrapper_cfg_overlay(config), **kwargs.pop("pretrained_cfg_overlay", {})}
    if not pretrained:
        return timm.create_model(start.name, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs)
    names = _wrapper_label_names(config)
    classes = config.get("num_classes") or config.get("num_labels") or len(names or [])
    state_dict = _strip_wrapper_prefix(load_state_dict(str(folder / "model.safetensors")))
    overlay.update(state_dict=state_dict, source=None, num_classes=classes, label_names=names)
    return timm.create_model(start.name, pretrained=True, num_classes=classes, pretrained_cfg_overlay=overlay, **kwargs)


def _student_pretrained_cfg(
    model: nn.Module, num_classes: int, label_names: list[str] | None, new_head: bool, model_kwargs: dict
) -> dict[str, Any]:
    """The student's pretrained_cfg: the start's preprocessing, its input size changed by ``img_size`` /
    ``in_chans``, the new class count and names, no weight source (the weights are the student's now)."""
    cfg = filter_pretrained_cfg(
        {k: v for k, v in model.pretrained_cfg.items() if k != "state_dict"}, remove_source=True, remove_null=True
    )
    old_size = tuple(cfg.get("input_size") or (3, 224, 224))
    size = old_size[1:] if model_kwargs.get("img_size") is None else to_2tuple(model_kwargs["img_size"])
    input_size = (int(model_kwargs.get("in_chans") or old_size[0]), *(int(v) for v in size))
    if input_size != old_size:
        cfg.pop("test_input_size", None)
        cfg.pop("test_pool_size", None)
        cfg["pool_size"] = None
    cfg["input_size"] = input_size
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            cfg[key] = tuple(cfg[key])
    if new_head:
        for key in ("label_names", "label_descriptions", "label_offset"):
            cfg.pop(key, None)
    cfg["num_classes"] = num_classes
    if label_names is not None:
        cfg["label_names"] = list(label_names)
    return cfg


def _check_label_names(label_names: Sequence[str] | None, num_classes: int) -> None:
    if label_names is None:
        return
    if len(label_names) != num_classes:
        raise ValueError(
            f"label_names has {len(label_names)} names but num_classes={num_classes}: give one name per class."
        )
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names has duplicates ({list(label_names)[:10]}...): class names must be unique.")


def create_student(
    source: str,
    *,
    num_classes: int,
    label_names: Sequence[str] | None = None,
    pretrained: bool = False,
    **model_kwargs: Any,
) -> TimmWrapperForImageClassification:
    """A timm model wrapped for ``transformers.Trainer``: freshly initialised, or started from a checkpoint.

    Args:
        source: a timm architecture name, optionally with a pretrained tag (``"resnet18.a1_in1k"``);
            ``"hf-hub:<owner>/<name>[@<revision>]"``; or ``"local-dir:<path>"``. A folder or Hub repo holds
            config.json + model.safetensors in timm's layout (``timm.models.save_for_hf``, ``ltkd_hf.save_student``)
            or in transformers' TimmWrapper layout (``save_pretrained``, Trainer checkpoints); its config gives the
            architecture, its model_args and its preprocessing.
        num_classes: the student's class count.
        label_names: class names in index order (``config.id2label``; ``"LABEL_i"`` when None).
        pretrained: start from the source's weights (safetensors only: a folder or repo with only pickled weights
            raises). Every backbone weight is loaded, strictly (timm's loader; a ViT's position embeddings are
            resampled for another ``img_size``). The classifier is kept only when it already predicts these
            classes (the checkpoint's class count is ``num_classes``, and its label names, when both are known,
            are ``label_names``; its names are then inherited when ``label_names`` is None); otherwise it is
            replaced by a freshly initialised one (``reset_classifier(num_classes)``). Without ``pretrained``,
            every weight has the architecture's own initialisation.
        model_kwargs: go to ``timm.create_model`` (e.g. ``img_size=64``, ``drop_path_rate=0.1``), on top of the
            checkpoint config's model_args; they must be JSON-serializable (they are saved in config.json).

    Returns:
        ``TimmWrapperForImageClassification``: ``forward(pixel_values, labels=None)`` returns an
        ``ImageClassifierOutput`` with (B, num_classes) logits and, given labels, the cross-entropy loss.
        Its ``config.pretrained_cfg`` (also ``unwrap_timm(student).pretrained_cfg``) is the start's preprocessing
        with the input size the student takes (``img_size``), so ``timm.data.resolve_data_config(model=
        unwrap_timm(student))`` and transformers' image processor see the student's input. Where it started is
        recorded in the config, for a model card's ``base_model``:

        - ``config.base_model``: the Hub repo id the weights came from (the ``hf-hub:`` repo, or the hf_hub_id
          of a timm name's pretrained tag, e.g. ``"timm/resnet18.a1_in1k"``); None for a local folder or when
          not ``pretrained``.
        - ``config.base_model_revision``: the commit of an ``hf-hub:`` source's files (its ``@revision``, default
          main, resolved when the student is created), else None.
        - ``config.base_model_source``: the source the weights came from (``local-dir:`` with an absolute path,
          ``hf-hub:<owner>/<name>@<commit>``); None when not ``pretrained``.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(
            f"source={source!r}: pass a timm name ('cifar_resnet8x4', 'resnet18.a1_in1k'), "
            f"'hf-hub:<owner>/<name>[@<revision>]' or 'local-dir:<path>'."
        )
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least 1 class.")
    _check_label_names(label_names, num_classes)
    for key, value in model_kwargs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"model_kwargs[{key!r}]={value!r} is not JSON-serializable, but the student's config.json must hold "
                f"it to rebuild the model: pass a name or a number (e.g. act_layer='gelu')."
            ) from None
    if source.startswith(HUB_PREFIX):
        start = _hub_start(source, pretrained)
    elif source.startswith(_LOCAL_PREFIX):
        start = _local_start(source, pretrained)
    else:
        start = _timm_start(source, pretrained)

    new_head = True
    if start.wrapper_folder is not None:
        model = _build_from_wrapper(start, pretrained, num_classes, model_kwargs)
    elif pretrained:  # the checkpoint's own class count, so timm loads every tensor strictly
        model = timm.create_model(start.name, pretrained=True, **model_kwargs)
    else:
        model = timm.create_model(start.name, num_classes=num_classes, **model_kwargs)
    if pretrained:
        found = _names_of(model.pretrained_cfg.get("label_names"))
        same_names = label_names is None or found is None or found == [str(n) for n in label_names]
        new_head = not (model.num_classes == num_classes and same_names)
        if new_head:
            model.reset_classifier(num_classes)
        elif label_names is None and found is not None:
            label_names = found
    # The checkpoint's own model_args (e.g. a ViT saved at img_size=32) count as much as the call's.
    model_args = {k: v for k, v in ((start.config or {}).get("model_args") or {}).items() if k != "num_classes"}
    model_args.update(model_kwargs)
    cfg = _student_pretrained_cfg(model, num_classes, label_names, new_head, model_args)
    model.pretrained_cfg = model.default_cfg = cfg

    labels = {}
    if label_names is not None:
        labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    config = TimmWrapperConfig(
        architecture=cfg["architecture"],
        num_labels=num_classes,
        model_args=model_args or None,
        pretrained_cfg=cfg,
        base_model=start.hub_id if pretrained else None,
        base_model_revision=start.revision if pretrained else None,
        base_model_source=start.recorded if pretrained else None,
        **labels,
    )
    student = TimmWrapperForImageClassification(config)
    # transformers re-initialises every conv/linear with normal(0, 0.02): put back the weights timm built (the
    # architecture's own initialisation, e.g. Kaiming for the CIFAR ResNets, or the checkpoint's). The strict
    # load also checks that the config rebuilds the same model.
    student.timm_model.load_state_dict(model.state_dict())
    student.timm_model.pretrained_cfg = student.timm_model.default_cfg = copy.deepcopy(cfg)
    return student
