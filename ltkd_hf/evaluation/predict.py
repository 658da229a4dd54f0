"""Logits of any classifier (timm model or transformers wrapper) over a dataset, on one or many processes."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    collate_fn: Callable,
    batch_size: int = 256,
    accelerator: Accelerator | None = None,
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits ``(N, C)`` and labels ``(N,)`` of ``model`` on ``dataset`` in dataset order.

    Under several processes each one scores a shard and the results are gathered (padding dropped), so every
    process gets the full arrays. ``input_transform`` converts the batch's ``pixel_values`` first (a teacher
    that normalises differently from the student).
    """
    accelerator = accelerator or Accelerator()
    loader = accelerator.prepare_data_loader(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn))
    model = accelerator.prepare_model(model, evaluation_mode=True)
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    all_logits, all_labels = [], []
    for batch in tqdm(loader, desc="predict", disable=not accelerator.is_local_main_process, leave=False):
        pixel_values = batch["pixel_values"]
        if input_transform is not None:
            pixel_values = input_transform(pixel_values)
        out = model(pixel_values.to(dtype))
        logits = (out.logits if hasattr(out, "logits") else out).float()
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train(was_training)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()
