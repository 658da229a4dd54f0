"""Precision policy shared by the losses: float32 math whatever the models ran in."""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64 (gradcheck, references), float32 otherwise (bf16/fp16/fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def statistics_dtype(device: torch.device) -> torch.dtype:
    """The dtype of batch sums of probabilities (LTKD's group sums S_G): float64, so that a group whose total mass
    over the batch is below float32's smallest normal number (about e^-87: a confident teacher at T = 1) keeps its
    sum instead of becoming 0; float32 on Apple's MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64
