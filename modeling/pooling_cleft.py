"""Text pooling: which hidden states of the text tower become the text feature (`config.text_pooling`).

- `"last"` (cleft-hf's default): the last non-padding token, i.e. the EOS the processor appends, which attends to
  the whole caption and to itself.
- `"first_pad"` (the reference code's): the first padding EOS after the caption, which attends to the caption but
  not to itself (attention mask 0 on it). cleft-hf's processor appends that EOS already, so this mode pools the
  same token as `"last"` and only sets its attention-mask entry to 0 (its position id stays the one after the
  caption, as in the reference).

- `"cls"` (encoders, the BERT CLIP baseline's): the first token, the tokenizer's [CLS].
- `"mean"`: the mean of the attended tokens' states.

Each mode has its attention mask / position ids (`text_attention_inputs`) and its pooling (`pool_text`).
"""

from __future__ import annotations

import torch

TEXT_POOLINGS = ("last", "first_pad", "cls", "mean")
ENCODER_POOLINGS = ("cls", "mean")  # what an encoder (BERT family) pools; causal LLMs: last, first_pad, mean


def last_token_index(attention_mask: torch.Tensor) -> torch.LongTensor:
    """`(batch, length)` mask -> `(batch,)` index of the last attended token (right or left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def text_attention_inputs(attention_mask: torch.Tensor, pooling: str) -> tuple[torch.Tensor, torch.LongTensor]:
    """The `(batch, length)` attention mask and position ids the text tower runs with for `pooling`.

    Position ids count the attended tokens of `attention_mask` (0, 1, ... from the first one); `"first_pad"`
    then masks the pooled token so that it does not attend to itself.
    """
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    if pooling == "first_pad":
        short = (attention_mask.sum(dim=1) < 2).nonzero().flatten().tolist()
        if short:
            raise ValueError(
                f"text_pooling='first_pad' needs a token before the pooled EOS (batch rows {short}): "
                "tokenise with the CLEFT processor, which appends the EOS"
            )
        rows = torch.arange(attention_mask.shape[0], device=attention_mask.device)
        attention_mask = attention_mask.clone()
        attention_mask[rows, last_token_index(attention_mask)] = 0
    return attention_mask, position_ids


def pool_text(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`(batch, length, hidden)` last hidden states and the caller's `(batch, length)` mask (before
    `text_attention_inputs`) -> `(batch, hidden)` pooled text feature."""
    if pooling in ("last", "first_pad"):
        rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
        return hidden_states[rows, last_token_index(attention_mask).to(hidden_states.device)]
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling == "mean":
        weights = attention_mask.to(device=hidden_states.device, dtype=hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"text_pooling must be one of {TEXT_POOLINGS}, got {pooling!r}")


__all__ = ["ENCODER_POOLINGS", "TEXT_POOLINGS", "last_token_index", "pool_text", "text_attention_inputs"]
