"""Class groups by training frequency: the head / medium / tail split that LTKD rebalances over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ClassGroups"]


def _check_counts(class_counts: Sequence[int]) -> np.ndarray:
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            f"class_counts must be a non-empty 1-D sequence of per-class training counts, got shape {counts.shape}."
        )
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"class_counts must hold finite non-negative numbers, got {counts.tolist()[:10]}...")
    return counts


@dataclass(frozen=True)
class ClassGroups:
    """A partition of ``C`` classes into ``K`` groups.

    Attributes:
        class_to_group: group id (0..K-1) of each class, in class-index order.
        names: one name per group, group id order (``["head", "medium", "tail"]`` for the paper's split).
    """

    class_to_group: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_to_group", tuple(int(g) for g in self.class_to_group))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        k = len(self.names)
        if k == 0 or not self.class_to_group:
            raise ValueError("ClassGroups needs at least one class and one group name.")
        bad = sorted({g for g in self.class_to_group if not 0 <= g < k})
        if bad:
            raise ValueError(f"class_to_group holds group ids {bad} outside 0..{k - 1} (one per name in {self.names}).")
        empty = [self.names[g] for g in range(k) if g not in set(self.class_to_group)]
        if empty:
            raise ValueError(f"groups {empty} have no class; every group needs at least one class.")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_counts(cls, class_counts: Sequence[int], num_groups: int = 3) -> "ClassGroups":
        """Split classes into ``num_groups`` groups by training count, most frequent first.

        ``num_groups=3`` gives the paper's 33% / 34% / 33% head / medium / tail split; any other ``K``
        gives equal contiguous blocks of the frequency-sorted classes (the first blocks take one extra
        class when ``C`` is not divisible by ``K``). Ties keep class-index order.
        """
        counts = _check_counts(class_counts)
        num_classes = counts.size
        if not isinstance(num_groups, (int, np.integer)) or not 1 <= num_groups <= num_classes:
            raise ValueError(
                f"num_groups must be an integer in 1..{num_classes} (the number of classes), got {num_groups!r}."
            )
        order = np.argsort(-counts, kind="stable")
        if num_groups == 3:
            outer = max(1, int(round(0.33 * num_classes)))
            sizes = [outer, num_classes - 2 * outer, outer]
            names = ("head", "medium", "tail")
        else:
            sizes = [len(b) for b in np.array_split(np.arange(num_classes), num_groups)]
            names = ("all",) if num_groups == 1 else tuple(f"group_{g}" for g in range(num_groups))
        sorted_group = np.repeat(np.arange(num_groups), sizes)
        class_to_group = np.empty(num_classes, dtype=np.int64)
        class_to_group[order] = sorted_group
        return cls(tuple(class_to_group.tolist()), names)

    @classmethod
    def by_threshold(cls, class_counts: Sequence[int], many: int = 100, few: int = 20) -> "ClassGroups":
        """The reporting split of the long-tailed literature: many (> ``many`` images), medium
        (``few``..``many``), few (< ``few``). Groups that would be empty are dropped."""
        counts = _check_counts(class_counts)
        if not 0 < few <= many:
            raise ValueError(f"thresholds must satisfy 0 < few <= many, got few={few}, many={many}.")
        raw = np.where(counts > many, 0, np.where(counts >= few, 1, 2))
        present = [g for g in range(3) if np.any(raw == g)]
        remap = {g: i for i, g in enumerate(present)}
        names = tuple(("many", "medium", "few")[g] for g in present)
        return cls(tuple(remap[int(g)] for g in raw), names)

    # -- views ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_to_group)

    @property
    def num_groups(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> list[int]:
        """Number of classes in each group, group id order."""
        return np.bincount(np.asarray(self.class_to_group), minlength=self.num_groups).tolist()

    def labelled(self) -> list[str]:
        """Each group with its number of classes, as reports, cards and plots name them: ``"head (1 class)"``."""
        return [f"{name} ({size} class{'' if size == 1 else 'es'})" for name, size in zip(self.names, self.sizes)]

    def index(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The class -> group map as a LongTensor of length ``C`` (the ``class_to_group`` of the losses)."""
        return torch.tensor(self.class_to_group, dtype=torch.long, device=device)

    def classes_of(self, group: int | str) -> list[int]:
        """Class indices of one group, by id or name."""
        g = self.names.index(group) if isinstance(group, str) else int(group)
        return [c for c, gc in enumerate(self.class_to_group) if gc == g]

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"class_to_group": list(self.class_to_group), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassGroups":
        missing = {"class_to_group", "names"} - set(data)
        if missing:
            raise ValueError(f"ClassGroups.from_dict: missing keys {sorted(missing)} in {sorted(data)}.")
        return cls(tuple(data["class_to_group"]), tuple(data["names"]))
