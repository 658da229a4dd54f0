"""Precision policy shared by the losses: float32 math whatever the models ran in."""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64 (gradcheck, references), float32 otherwise (bf16/fp16/fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
