"""A report corpus as token windows for language-model pretraining: the held-out split, documents encoded and cut
into windows of at most ``seq_len`` tokens (eos appended), windows right-padded into a batch."""

from __future__ import annotations

from collections.abc import Sequence
import random

import torch
from transformers import PreTrainedTokenizerBase


def split_train_eval(texts: Sequence[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed`` and hold out ``eval_fraction`` of the texts (at least one)."""
    if len(texts) < 2:
        raise ValueError(f"texts has {len(texts)} non-blank item(s); pretraining needs at least 2 (train + eval)")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be strictly between 0 and 1")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    num_eval = min(len(texts) - 1, max(1, round(eval_fraction * len(texts))))
    return [texts[i] for i in order[num_eval:]], [texts[i] for i in order[:num_eval]]


def encode_documents(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, seq_len: int) -> list[list[int]]:
    """Token ids per document (tokenizer specials, eos appended), cut into windows of at most ``seq_len``."""
    windows = []
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        if not ids or ids[-1] != tokenizer.eos_token_id:
            ids = ids + [tokenizer.eos_token_id]
        windows.extend(ids[start : start + seq_len] for start in range(0, len(ids), seq_len))
    return [window for window in windows if len(window) >= 2]


def collate_windows(windows: Sequence[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest window: ``input_ids``, ``attention_mask``, ``labels`` (B, L); pads → -100."""
    length = max(len(window) for window in windows)
    input_ids = torch.full((len(windows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), length), dtype=torch.long)
    for row, window in enumerate(windows):
        input_ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
        attention_mask[row, : len(window)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


__all__ = ["collate_windows", "encode_documents", "split_train_eval"]
