"""Prompt ensembles: several templates per class averaged (CLIP), and positive / negative prompt pairs (CheXzero)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def check_templates(templates: Sequence[str], what: str = "prompt_templates") -> list[str]:
    """The templates as a list; each must hold one `{}` for the class name."""
    templates = list(templates)
    if not templates or any(not isinstance(t, str) or t.count("{}") != 1 for t in templates):
        raise ValueError(f"{what} must be a non-empty list of strings with one '{{}}' each, got {templates}")
    return templates


class CLEFTPromptEnsembleMixin:
    """Methods of `CLEFTModel` for ensembles of hand prompts (needs `CLEFTZeroShotMixin`)."""

    def encode_prompt_ensemble(
        self, class_names: Sequence[str], processor: Any, prompt_templates: Sequence[str]
    ) -> torch.FloatTensor:
        """`(n_classes, projection_dim)`: per class the mean of the L2-normalised embeddings of every template
        applied to its name, normalised again (CLIP's prompt ensembling)."""
        templates = check_templates(prompt_templates)
        per_template = [self.encode_class_prompts(class_names, processor, prompt_template=t) for t in templates]
        return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)

    @torch.no_grad()
    def zero_shot_multilabel(
        self,
        pixel_values: torch.FloatTensor | None = None,
        class_names: Sequence[str] | None = None,
        processor: Any = None,
        *,
        image_embeds: torch.FloatTensor | None = None,
        positive_template: str = "{}",
        negative_template: str = "no {}",
    ) -> torch.FloatTensor:
        """`(batch, n_classes)` independent probabilities: per class the softmax of its positive prompt against
        its negative one ("{}" vs "no {}", CheXzero), so several findings can be present at once."""
        positive, negative = check_templates([positive_template, negative_template], "positive/negative templates")
        pairs = torch.stack(
            [
                self.cached_class_embeddings(class_names=class_names, processor=processor, prompt_template=template)
                for template in (positive, negative)
            ]
        )
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("zero_shot_multilabel needs pixel_values or image_embeds")
            image_embeds = F.normalize(self.get_image_features(pixel_values), dim=-1)
        logits = torch.stack([self.similarity_logits(image_embeds.to(pairs.device), side) for side in pairs], dim=-1)
        return logits.softmax(dim=-1)[..., 0]


__all__ = ["CLEFTPromptEnsembleMixin", "check_templates"]
