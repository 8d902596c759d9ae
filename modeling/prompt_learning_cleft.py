"""Stage-2 context prompts: learned token embeddings placed before the class text in the LLM input."""

from __future__ import annotations

import torch
from torch import nn


class CLEFTPromptLearner(nn.Module):
    r"""Holds the learned context `ctx`, `(n_ctx, hidden)` shared or `(n_classes, n_ctx, hidden)` per class.

    The class texts come as token ids (right padded); `insert_context` splices the context in after the
    leading BOS token when the tokenizer adds one (Llama), else at the front (GPT-2), and extends the mask.
    The context is frozen until prompt tuning.
    """

    def __init__(self, num_context_tokens: int, hidden_size: int, num_classes: int | None, class_specific: bool):
        super().__init__()
        if class_specific and not num_classes:
            raise ValueError("class-specific context needs class_names in the config")
        shape = (num_classes, num_context_tokens, hidden_size) if class_specific else (num_context_tokens, hidden_size)
        self.ctx = nn.Parameter(torch.empty(shape), requires_grad=False)
        self.class_specific = class_specific
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.ctx, std=0.02)

    @property
    def num_context_tokens(self) -> int:
        return self.ctx.shape[-2]

    @torch.no_grad()
    def initialize_from_embeddings(self, token_embeddings: torch.Tensor) -> None:
        """Initialise from `(n_tokens, hidden)` embeddings of the init text, repeated/truncated to `n_ctx`."""
        if token_embeddings.ndim != 2 or token_embeddings.shape[0] == 0:
            raise ValueError("prompt init text produced no tokens")
        repeats = -(-self.num_context_tokens // token_embeddings.shape[0])
        filled = token_embeddings.repeat(repeats, 1)[: self.num_context_tokens].to(self.ctx)
        self.ctx.copy_(filled.expand_as(self.ctx))

    def insert_context(
        self,
        class_embeddings: torch.Tensor,
        attention_mask: torch.Tensor,
        insert_at: int,
        class_indices: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Splice the context into class-text embeddings.

        Args:
            class_embeddings: `(n, length, hidden)` token embeddings of the class texts.
            attention_mask: `(n, length)`.
            insert_at: position of the first context token (1 after a BOS token, else 0).
            class_indices: `(n,)` class of each row, needed for class-specific context (default `arange(n)`).

        Returns:
            `(n, length + n_ctx, hidden)` embeddings and the matching `(n, length + n_ctx)` mask.
        """
        n = class_embeddings.shape[0]
        if self.class_specific:
            if class_indices is None:
                class_indices = torch.arange(n, device=class_embeddings.device)
            ctx = self.ctx[class_indices]
        else:
            ctx = self.ctx.unsqueeze(0).expand(n, -1, -1)
        ctx = ctx.to(class_embeddings.dtype)
        embeds = torch.cat([class_embeddings[:, :insert_at], ctx, class_embeddings[:, insert_at:]], dim=1)
        ones = attention_mask.new_ones(n, self.num_context_tokens)
        mask = torch.cat([attention_mask[:, :insert_at], ones, attention_mask[:, insert_at:]], dim=1)
        return embeds, mask


__all__ = ["CLEFTPromptLearner"]
