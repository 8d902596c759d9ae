"""Output of `CLEFTModel.forward` (the fields of transformers' `CLIPOutput`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput


@dataclass
class CLEFTOutput(ModelOutput):
    r"""Output of [`CLEFTModel.forward`] (the fields of transformers' `CLIPOutput`).

    Args:
        loss: symmetric InfoNCE over the batch (when `return_loss=True`).
        logits_per_image: `(n_images, n_texts)` scaled cosine similarities plus `logit_bias`.
        logits_per_text: `(n_texts, n_images)`, the transpose.
        image_embeds: `(n_images, projection_dim)`, L2-normalised.
        text_embeds: `(n_texts, projection_dim)`, L2-normalised.
        text_model_output: the LLM's `last_hidden_state` `(n_texts, length, hidden)`, `pooler_output` (last
            non-padding token, `(n_texts, hidden)`) and, when asked, `hidden_states` / `attentions`.
        vision_model_output: timm's final tokens `(n_images, tokens, width)` (or feature map `(n, C, H, W)`),
            `pooler_output` `(n_images, width)` and, when asked, timm's `forward_intermediates` as `hidden_states`.
            None when `image_embeds` were given.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )


__all__ = ["CLEFTOutput"]
