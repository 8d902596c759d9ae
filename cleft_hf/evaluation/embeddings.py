"""Embeddings of a whole evaluation set, computed once (images in batches, gathered across processes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def compute_image_embeddings(model, loader, accelerator=None) -> tuple[torch.Tensor, np.ndarray | None, list[str]]:
    """L2-normalised image embeddings `(N, D)` (float32, CPU), labels `(N,)` or `(N, C)`, and texts.

    With an `accelerator`, each process embeds its shard and `gather_for_metrics` reassembles the dataset
    (padding duplicates dropped).
    """
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    unwrapped.eval()
    device = unwrapped.logit_scale.device
    embeds, labels, texts = [], [], []
    for batch in loader:
        features = F.normalize(unwrapped.get_image_features(batch["pixel_values"].to(device)), dim=-1).float()
        batch_labels = batch.get("labels")
        if accelerator is not None:
            features = accelerator.gather_for_metrics(features)
            batch_labels = accelerator.gather_for_metrics(batch_labels) if batch_labels is not None else None
            batch_texts = accelerator.gather_for_metrics(list(batch.get("text", [])), use_gather_object=True)
        else:
            batch_texts = list(batch.get("text", []))
        embeds.append(features.cpu())
        if batch_labels is not None:
            labels.append(batch_labels.cpu().numpy())
        texts.extend(batch_texts)
    return torch.cat(embeds), (np.concatenate(labels) if labels else None), texts


@torch.no_grad()
def compute_text_embeddings(model, processor: Any, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings `(len(texts), D)` (float32, CPU)."""
    model.eval()
    device = model.logit_scale.device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = processor(text=list(texts[start : start + batch_size]))
        features = model.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out.append(F.normalize(features, dim=-1).float().cpu())
    return torch.cat(out)
