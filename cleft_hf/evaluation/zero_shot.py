"""Zero-shot classification of a whole evaluation set from precomputed image embeddings."""

from __future__ import annotations

from typing import Any, Sequence

import torch


@torch.no_grad()
def evaluate_zero_shot(
    model,
    image_embeds: torch.Tensor,
    class_names: Sequence[str],
    processor: Any = None,
    *,
    prompt_template: str | None = None,
    use_learned_prompts: bool = False,
) -> torch.Tensor:
    """Class probabilities `(N, C)` for L2-normalised `image_embeds` `(N, D)`.

    Class prompts (hand-written `prompt_template.format(name)` or the learned context + name) are encoded
    once for the whole set, exactly as `CLEFTModel.zero_shot_classify` scores a batch.
    """
    model.eval()
    class_embeds = model.encode_class_prompts(
        list(class_names), processor, prompt_template=prompt_template, use_learned_prompts=use_learned_prompts
    ).float().cpu()
    scale = model.logit_scale.exp().clamp(max=100).float().cpu()
    return (scale * image_embeds.float() @ class_embeds.t()).softmax(dim=-1)
