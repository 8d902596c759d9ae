"""Batch collation: stack transformed images, tokenise texts with the processor (batch padding), labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
import zlib

import torch

from .transforms import ImageDecodeError


class ImageTextCollator:
    """Rows from a transformed dataset (`pixel_values` (3, H, W), `text`, optional `labels`) -> a batch.

    Output: `pixel_values` `(B, 3, H, W)`, `input_ids` / `attention_mask` `(B, L)` (right padded, EOS last),
    `labels` `(B,)` or `(B, C)` and `label_mask` `(B, C)` when rows have them, and `text`
    (with `label_caption_prob`, rows' `label_caption` replaces the report with that probability) (the raw strings, for retrieval metrics).
    With a `skip_bad` transform, rows whose image could not be decoded are dropped and their files listed in
    `skipped_images` (the batch is then smaller; the training loop counts them).
    """

    def __init__(self, processor: Any, max_length: int | None = None, label_caption_prob: float = 0.0):
        if not 0.0 <= label_caption_prob <= 1.0:
            raise ValueError(f"label_caption_prob must be in [0, 1], got {label_caption_prob}")
        self.processor = processor
        self.max_length = max_length
        self.label_caption_prob = label_caption_prob

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        skipping = "bad_image" in rows[0]  # a transform with skip_bad: undecodable rows are dropped and listed
        skipped = [row["bad_image"] for row in rows if skipping and row["bad_image"] is not None]
        if skipped:
            rows = [row for row in rows if row["bad_image"] is None]
            if not rows:
                raise ImageDecodeError(f"no image of a batch could be decoded (skip_bad): {', '.join(skipped)}")
        batch: dict[str, Any] = {"pixel_values": torch.stack([torch.as_tensor(row["pixel_values"]) for row in rows])}
        if skipping:
            batch["skipped_images"] = skipped
        texts = [row["text"] for row in rows] if "text" in rows[0] else None
        if texts is not None and self.label_caption_prob > 0:  # torch RNG: part of the saved training state
            use_caption = (torch.rand(len(rows)) < self.label_caption_prob).tolist()
            texts = [row["label_caption"] if swap else text for row, text, swap in zip(rows, texts, use_caption)]
        if texts is not None:
            batch["text"] = texts
            encoded = self.processor(text=texts, max_length=self.max_length)
            batch["input_ids"], batch["attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        if "labels" in rows[0]:
            labels = [row["labels"] for row in rows]
            dtype = torch.float32 if isinstance(labels[0], (list, tuple)) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        if "label_mask" in rows[0]:
            batch["label_mask"] = torch.tensor([row["label_mask"] for row in rows], dtype=torch.float32)
        return batch


def caption_ids(texts: Sequence[str]) -> torch.Tensor:
    """Integer id per caption `(B,)`, equal for identical captions (the losses' `text_ids`: duplicates are positives)."""
    return torch.tensor([zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF for text in texts], dtype=torch.long)
