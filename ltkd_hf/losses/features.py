"""Intermediate features for the feature-based losses, captured with forward hooks during a normal forward.

Under DDP (or any wrapper) the student must run through the wrapped model's own ``forward`` so that the
gradient synchronisation sees the whole graph; calling ``forward_intermediates`` on the bare model would
bypass it. ``capture_features`` therefore hooks the bare timm model's modules and records what a normal
``model(pixel_values=x)`` computes::

    with capture_features(student) as student_features:
        logits = student(pixel_values=x).logits
    with torch.no_grad(), capture_features(teacher, preact=True) as teacher_features:
        teacher_logits = teacher(x)
    terms = loss_fn(logits, teacher_logits, student_features=student_features,
                    teacher_features=teacher_features)

The captured dict (the feature contract of ``reviewkd`` and ``catkd``):

* ``"stages"``: the stem's and each stage's output, shallowest first, exactly as
  ``forward_intermediates(x, intermediates_only=True)`` returns them;
* ``"preact_stages"`` (only with ``preact=True``): the same features before their closing activation, as
  the CIFAR KD model zoo's ``preact`` features, where the model declares them (see ``preact_points``);
* ``"final_map"``: the map the classifier head pools, ``forward_features(x)``, (B, num_features, H, W);
* ``"pooled"``: the pooled pre-logits feature, ``forward_head(final_map, pre_logits=True)``, (B, num_features);
* ``"classifier_weight"``: the classifier's weight parameter itself, (num_classes, num_features), put in
  at entry (it is the tensor the forward uses, so a loss's gradient reaches it as the forward's does).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

__all__ = ["capture_features", "feature_channels", "preact_points"]

# A pre-activation point: the module whose last call's "input" (cloned: the activations run in place)
# or "output" is the feature.
PreactPoint = tuple[nn.Module, str]


def timm_model(model: nn.Module) -> nn.Module:
    """The bare timm model inside a transformers TimmWrapper model (and any DDP / torch.compile wrapper)."""
    inner = extract_model_from_parallel(model)
    return getattr(inner, "timm_model", inner)


def _feature_modules(model: nn.Module) -> list[nn.Module]:
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info or not all(isinstance(i, dict) and "module" in i for i in info):
        raise ValueError(
            f"model {type(model).__name__} has no timm feature_info list naming its stem and stage modules; "
            "capture_features needs a timm model that lists them (the CIFAR architectures of ltkd_hf do)."
        )
    return [model.get_submodule(i["module"]) for i in info]


def _global_pool(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    pool = getattr(head, "global_pool", None) if isinstance(head, nn.Module) else None
    pool = pool if pool is not None else getattr(model, "global_pool", None)
    if not isinstance(pool, nn.Module):
        raise ValueError(
            f"model {type(model).__name__} has no global_pool module (model.head.global_pool or "
            "model.global_pool); capture_features reads the pooled feature and the final map there."
        )
    return pool


def feature_channels(model: nn.Module) -> list[int]:
    """Channels of the captured ``"stages"`` (stem first), from the timm model's ``feature_info``."""
    inner = timm_model(model)
    _feature_modules(inner)
    return [int(i["num_chs"]) for i in inner.feature_info]


def preact_points(model: nn.Module) -> list[PreactPoint]:
    """Where each stem/stage feature is read before its closing activation, as the model declares it.

    A model declares them in its timm ``feature_info``: every entry (stem, then each stage) holds
    ``"preact": (submodule name, "input" | "output")``, the module whose last call's input or output is
    that feature before its activation. The CIFAR architectures of ltkd_hf declare the CIFAR KD model zoo's
    ``preact`` features; other timm models declare none and give post-activation features only.
    """
    inner = timm_model(model)
    _feature_modules(inner)
    name = type(inner).__name__
    declared = [i for i, info in enumerate(inner.feature_info) if "preact" in info]
    if not declared:
        raise ValueError(
            "preact=True knows the pre-activation features of the CIFAR architectures of ltkd_hf and of any model "
            "whose feature_info entries declare them ('preact': (submodule name, 'input' or 'output')), got "
            f"{name}; capture with preact=False (and build ReviewKD with teacher_preact=False), or declare them in "
            f"its feature_info."
        )
    if len(declared) != len(inner.feature_info):
        raise ValueError(
            f"the feature_info of {name} declares 'preact' for entries {declared} of {len(inner.feature_info)}; "
            "declare it for every entry (the stem and each stage) or for none."
        )
    points = []
    for index, info in enumerate(inner.feature_info):
        preact = info["preact"]
        if not (isinstance(preact, (tuple, list)) and len(preact) == 2 and preact[1] in ("input", "output")):
            raise ValueError(
                f"the feature_info of {name}, entry {index}: 'preact' is {preact!r}, expected (submodule name, "
                "'input' or 'output')."
            )
        try:
            points.append((inner.get_submodule(preact[0]), preact[1]))
        except AttributeError as error:
            raise ValueError(
                f"the feature_info of {name}, entry {index}: 'preact' names no submodule ({error})."
            ) from None
    return points


def _store_output(slots: list | dict, index: int | str, flatten: bool = False):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        slots[index] = output.flatten(1) if flatten else output

    return hook


def _store_input(slots: list | dict, index: int | str, clone: bool):
    def hook(module: nn.Module, args: tuple) -> None:
        slots[index] = args[0].clone() if clone else args[0]

    return hook


@contextmanager
def capture_features(model: nn.Module, *, preact: bool = False) -> Iterator[dict[str, Any]]:
    """Record the features of the forwards run inside the ``with`` block (see the module docstring).

    Args:
        model: a timm model, or a wrapper around one (transformers TimmWrapper, DDP, torch.compile); the
            hooks go on the bare timm model, so calling the wrapper's ``forward`` fills the dict.
        preact: also record ``"preact_stages"`` (``preact_points``); costs one copy of each such feature,
            because the activations run in place.

    Yields:
        A dict, filled as the forward runs (a later forward inside the block overwrites it); the hooks
        are removed on exit, the dict stays valid.
    """
    inner = timm_model(model)
    modules = _feature_modules(inner)
    pool = _global_pool(inner)
    classifier = inner.get_classifier()
    weight = getattr(classifier, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(
            f"model {type(inner).__name__} has no classifier weight (get_classifier() is "
            f"{type(classifier).__name__}); build it with num_classes > 0."
        )
    features: dict[str, Any] = {"stages": [None] * len(modules), "classifier_weight": weight}
    handles = [m.register_forward_hook(_store_output(features["stages"], i)) for i, m in enumerate(modules)]
    handles.append(pool.register_forward_pre_hook(_store_input(features, "final_map", clone=False)))
    handles.append(pool.register_forward_hook(_store_output(features, "pooled", flatten=True)))
    try:
        if preact:
            points = preact_points(inner)
            preact_slots: list = [None] * len(points)
            for i, (module, where) in enumerate(points):
                if where == "input":
                    handles.append(module.register_forward_pre_hook(_store_input(preact_slots, i, clone=True)))
                else:
                    handles.append(module.register_forward_hook(_store_output(preact_slots, i)))
            features["preact_stages"] = preact_slots
        yield features
    finally:
        for handle in handles:
            handle.remove()
