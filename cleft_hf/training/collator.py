"""Batch collation: stack transformed images, tokenise texts with the processor (batch padding), labels."""

from __future__ import annotations

from typing import Any, Sequence

import torch


class ImageTextCollator:
    """Rows from a transformed dataset (`pixel_values` (3, H, W), `text`, optional `labels`) -> a batch.

    Output: `pixel_values` `(B, 3, H, W)`, `input_ids` / `attention_mask` `(B, L)` (right padded, EOS last),
    `labels` `(B,)` or `(B, C)` and `label_mask` `(B, C)` when rows have them, and `text` (the raw strings, for retrieval metrics).
    """

    def __init__(self, processor: Any, max_length: int | None = None, tokenize: bool = True):
        self.processor = processor
        self.max_length = max_length
        self.tokenize = tokenize

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"pixel_values": torch.stack([torch.as_tensor(row["pixel_values"]) for row in rows])}
        texts = [row["text"] for row in rows] if "text" in rows[0] else None
        if texts is not None:
            batch["text"] = texts
            if self.tokenize:
                encoded = self.processor(text=texts, max_length=self.max_length)
                batch["input_ids"], batch["attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        if "labels" in rows[0]:
            labels = [row["labels"] for row in rows]
            dtype = torch.float32 if isinstance(labels[0], (list, tuple)) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        if "label_mask" in rows[0]:
            batch["label_mask"] = torch.tensor([row["label_mask"] for row in rows], dtype=torch.float32)
        return batch
