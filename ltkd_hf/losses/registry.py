"""One calling convention for every distillation loss, and the name -> loss registry the trainer uses."""

from __future__ import annotations

import inspect
from typing import Callable, Sequence, TypeVar

import torch

from ..groups import ClassGroups

__all__ = ["LOSSES", "DistillationLoss", "available_losses", "create_loss", "register_loss"]


class DistillationLoss(torch.nn.Module):
    """Base class of the distillation losses.

    ``forward`` returns a dict of named 0-dim float32 terms whose ``"loss"`` entry is the weighted total
    (what the trainer adds to the CE term); the other entries are logged. Losses that compare features
    set ``requires_features`` and receive them as keywords; losses with trainable parts (feature
    adapters) hold them as submodules, so ``loss.parameters()`` is what the optimizer adds.
    Hyperparameters are keyword-only ``__init__`` arguments with their defaults; ``groups`` and
    ``class_counts`` are the data-derived inputs ``create_loss`` passes to the losses that take them.
    """

    requires_features: bool = False
    requires_labels: bool = False

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        student_features: Sequence[torch.Tensor] | None = None,
        teacher_features: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def batch_statistics(self, teacher_logits: torch.Tensor) -> torch.Tensor | None:
        """Statistics the loss gathers over the whole batch (LTKD's group sums), or ``None`` for a loss
        without any. The trainer sums them over a gradient-accumulation window, all-reduces them across
        processes when the loss syncs (``sync_across_processes``), and passes the total to ``forward`` as
        ``batch_statistics=``, so GA and DDP see one batch of the optimizer step's size."""
        return None

    def describe(self) -> str:
        """The resolved objective in one line, for the training log."""
        raise NotImplementedError(f"{type(self).__name__} must implement describe()")

    def extra_repr(self) -> str:
        return self.describe()

    def _require_labels(self, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError(
                f"{type(self).__name__} needs the ground-truth labels: call it with labels=<LongTensor (batch,)>."
            )
        return labels


LOSSES: dict[str, type[DistillationLoss]] = {}
_LossT = TypeVar("_LossT", bound=type[DistillationLoss])
_CONTEXT = ("groups", "class_counts", "student", "teacher")  # data- and model-derived inputs, not hyperparameters


def register_loss(name: str) -> Callable[[_LossT], _LossT]:
    """Class decorator: make a ``DistillationLoss`` subclass available to ``create_loss(name)``."""

    def add(cls: _LossT) -> _LossT:
        if name in LOSSES and LOSSES[name] is not cls:
            raise ValueError(f"a loss named {name!r} is already registered ({LOSSES[name].__name__}).")
        LOSSES[name] = cls
        return cls

    return add


def available_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(LOSSES)


def hyperparameters_of(cls: type[DistillationLoss]) -> dict[str, object]:
    """A loss class's keyword hyperparameters and their defaults."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CONTEXT
    }


def create_loss(
    name: str,
    *,
    groups: ClassGroups | None = None,
    class_counts: Sequence[int] | None = None,
    student: torch.nn.Module | None = None,
    teacher: torch.nn.Module | None = None,
    **hyperparameters: object,
) -> DistillationLoss:
    """Build the registered loss ``name`` (``available_losses()``) with the given hyperparameters.

    ``groups`` and ``class_counts`` go to the losses that take them (LTKD needs groups or class counts,
    BKD class counts) and are ignored by the others, so a trainer can always pass both; likewise
    ``student`` and ``teacher`` (the models) go to the feature losses that size their adapters from them. A
    hyperparameter set to ``None`` counts as not set (the loss's default, and no error for a loss that
    does not take it); one set to a value the loss does not take is an error.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {available_losses()}.")
    cls = LOSSES[name]
    accepted = hyperparameters_of(cls)
    kwargs = {k: v for k, v in hyperparameters.items() if v is not None}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} does not take the hyperparameter(s) {unknown}; it accepts {sorted(accepted)}."
        )
    takes = inspect.signature(cls.__init__).parameters
    context = {"groups": groups, "class_counts": class_counts, "student": student, "teacher": teacher}
    kwargs.update({k: v for k, v in context.items() if k in takes})
    return cls(**kwargs)
