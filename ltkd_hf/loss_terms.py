"""`LossTerms`: the loss's named terms of each step, summed until they are logged as means."""

from __future__ import annotations

import torch

__all__ = ["LossTerms"]


class LossTerms:
    """Running sums of named loss terms (``ce``, ``distill``, ``cross_group``, ...), one set per mode ("train",
    "eval"), kept on the device until a log reads them."""

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._counts = {"train": 0, "eval": 0}

    def add(self, mode: str, terms: dict[str, torch.Tensor], weight: int = 1) -> None:
        """Add one step's terms (detached, float32) to ``mode``'s sums, counted ``weight`` times (an evaluation
        batch's image count, so that its means are over images, as Trainer's ``eval_loss``)."""
        sums = self._sums[mode]
        for name, value in terms.items():
            value = value.detach().float() * weight
            sums[name] = sums[name] + value if name in sums else value
        self._counts[mode] += weight

    def pop_means(self, mode: str) -> dict[str, torch.Tensor]:
        """``mode``'s weighted mean of each term since the last call (sorted by name; empty when no step was
        added)."""
        sums, count = self._sums[mode], self._counts[mode]
        self._sums[mode], self._counts[mode] = {}, 0
        return {name: sums[name] / count for name in sorted(sums)}
