"""Features of CLEFT's two towers: image, text and learned-prompt features, and their similarity logits."""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .loss_cleft import logit_scale_value
from .pooling_cleft import pool_text, text_attention_inputs
from .projection_cleft import project


class CLEFTFeaturesMixin:
    """Methods of `CLEFTModel` that run the towers (needs `vision_model`, `text_model`, the projections,
    `prompt_set()` of `CLEFTPromptSetsMixin`, `logit_scale`, `logit_bias`)."""

    def vision_forward(
        self, pixel_values: torch.FloatTensor, output_hidden_states: bool = False
    ) -> BaseModelOutputWithPooling:
        """timm tower on `(batch, 3, H, W)`: final tokens (or feature map), pooled feature `(batch, width)` and,
        with `output_hidden_states`, the per-block outputs of timm's `forward_intermediates`."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (batch, 3, H, W), got {tuple(pixel_values.shape)}")
        hidden_states = None
        if output_hidden_states:
            if not hasattr(self.vision_model, "forward_intermediates"):
                raise ValueError(f"timm model {self.config.vision_model_name!r} has no forward_intermediates")
            tokens, hidden_states = self.vision_model.forward_intermediates(pixel_values)
            hidden_states = tuple(hidden_states)
        else:
            tokens = self.vision_model.forward_features(pixel_values)
        if tokens.ndim == 4:  # a convolutional tower (B, C, H, W): average over space
            if self.config.image_pooling != "mean":
                raise ValueError("image_pooling='cls' needs a transformer vision tower (token sequence output)")
            pooled = tokens.mean(dim=(2, 3))
        else:  # (B, tokens, C): all final tokens (CLS, registers, patches) or the class token
            pooled = tokens.mean(dim=1) if self.config.image_pooling == "mean" else tokens[:, 0]
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=pooled, hidden_states=hidden_states)

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """`(batch, 3, H, W)` -> projected image features `(batch, projection_dim)` (not normalised)."""
        pooled = self.vision_forward(pixel_values).pooler_output
        return project(self.visual_projection, pooled)

    def text_forward(self, attention_mask: torch.Tensor, **inputs: Any) -> BaseModelOutputWithPooling:
        """LLM on `input_ids` or `inputs_embeds` (+ `output_hidden_states` / `output_attentions`); `pooler_output`
        `(batch, hidden)` as `config.text_pooling` says (default: the last non-padding token, right or left
        padding alike; see `pooling_cleft`)."""
        if attention_mask.ndim != 2:
            raise ValueError(f"attention_mask must be (batch, length), got {tuple(attention_mask.shape)}")
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"empty text (no tokens) at batch row(s) {empty}")
        pooling = self.config.text_pooling
        model_mask, position_ids = text_attention_inputs(attention_mask, pooling)
        if not self.config.text_is_encoder:  # an encoder counts its own positions 0..L-1 (right padding)
            inputs["position_ids"] = position_ids
        outputs = self.text_model(attention_mask=model_mask, return_dict=True, **inputs)
        hidden = outputs.last_hidden_state
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=pool_text(hidden, attention_mask, pooling),
            hidden_states=outputs.get("hidden_states"),
            attentions=outputs.get("attentions"),
        )

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """Token ids `(batch, length)` -> projected text features `(batch, projection_dim)` (not normalised)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooled = self.text_forward(attention_mask, input_ids=input_ids).pooler_output
        return project(self.text_projection, pooled)

    def get_prompt_features(
        self,
        class_input_ids: torch.LongTensor | None = None,
        class_attention_mask: torch.Tensor | None = None,
        class_indices: torch.LongTensor | None = None,
        task: str | None = None,
    ) -> torch.FloatTensor:
        r"""Features of "[learned context] [class text]" prompts -> `(n_classes, projection_dim)`.

        Without arguments, uses the class names stored by `set_prompt_classes`. `class_indices` picks the
        class-specific context of each row (default: row i is class i); `task` a named prompt set.
        """
        pooled = self.prompt_forward(class_input_ids, class_attention_mask, class_indices, task=task).pooler_output
        return project(self.text_projection, pooled)

    def prompt_forward(
        self,
        class_input_ids: torch.LongTensor | None = None,
        class_attention_mask: torch.Tensor | None = None,
        class_indices: torch.LongTensor | None = None,
        task: str | None = None,
        **text_kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """`text_forward` of "[learned context] [class text]" (stored class names when no ids are given) with the
        context of prompt set `task` (None: the active set)."""
        learner = self.prompt_set(task)[0]
        if class_input_ids is None:
            class_input_ids, class_attention_mask = self.stored_class_inputs(task)
        if class_attention_mask is None:
            class_attention_mask = torch.ones_like(class_input_ids)
        bos = self.config.text_config.bos_token_id
        insert_at = int(bos is not None and bool((class_input_ids[:, 0] == bos).all()))
        if self.config.text_is_encoder:  # after the encoder's [CLS], which stays the pooled first token
            insert_at = 1
        embeddings = self.text_model.get_input_embeddings()(class_input_ids)
        embeds, mask = learner.insert_context(embeddings, class_attention_mask, insert_at, class_indices)
        return self.text_forward(mask, inputs_embeds=embeds, **text_kwargs)

    def stored_class_inputs(self, task: str | None = None) -> tuple[torch.LongTensor, torch.Tensor]:
        """Right-padded `(n_classes, length)` ids and mask of the stored class names (of prompt set `task`)."""
        token_ids = self.prompt_set(task)[2]
        if not token_ids:
            raise ValueError("no prompt classes stored: call set_prompt_classes(class_names, processor) first")
        device = self.logit_scale.device
        length = max(len(ids) for ids in token_ids)
        input_ids = torch.zeros(len(token_ids), length, dtype=torch.long, device=device)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, device=device)
            mask[row, : len(ids)] = 1
        return input_ids, mask

    # ----------------------------------------------------------------- scores
    def similarity_logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.FloatTensor:
        """`(n_images, n_texts)` logits of L2-normalised embeddings: `exp(logit_scale)` (clamped to
        `config.logit_scale_max` unless None) * cosine + `logit_bias` (the bias is 0 unless a sigmoid loss trained
        it; softmax scores do not depend on it)."""
        limit = self.config.logit_scale_max
        scale = logit_scale_value(self.logit_scale, float("inf") if limit is None else limit)
        return scale * image_embeds @ text_embeds.to(image_embeds.dtype).t() + self.logit_bias


__all__ = ["CLEFTFeaturesMixin"]
