"""Similarity maps that add up to the zero-shot logit: per-token terms of the mean-pooled image feature.

With `image_pooling="mean"` the image feature is `W @ mean_i(x_i) + b = mean_i(W @ x_i + b)` (a linear projection),
so the logit `s * <f / |f|, t> + logit_bias` of class text `t` is the sum over the final tokens `i` of
`s * <W @ x_i + b, t> / (N |f|) + logit_bias / N`: the projection bias `b` and the logit bias are shared equally by
the `N` tokens. Maps are exact for a linear projection only (an MLP head or `cls` pooling raise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .loss_cleft import logit_scale_value


@dataclass
class CLEFTSimilarityMaps:
    """Per-token terms of the zero-shot logits of `class_names`, for a batch of images.

    `patch_maps` `(batch, n_classes, grid_h, grid_w)` (the patch grid of a ViT, the feature map of a CNN);
    `cls` `(batch, n_classes)` and `registers` `(batch, n_classes, n_registers)` the terms of the prefix tokens
    (None when the tower has none); `logits` `(batch, n_classes)` the logits `zero_shot_classify` softmaxes.
    `patch_maps` summed + `cls` + `registers` summed == `logits`.
    """

    patch_maps: torch.Tensor
    cls: torch.Tensor | None
    registers: torch.Tensor | None
    logits: torch.Tensor
    class_names: list[str] | None = None

    def total(self) -> torch.Tensor:
        """`(batch, n_classes)` sum of every token's term (equals `logits` to float rounding)."""
        total = self.patch_maps.flatten(2).sum(-1)
        if self.cls is not None:
            total = total + self.cls
        if self.registers is not None:
            total = total + self.registers.sum(-1)
        return total


def _prefix_counts(vision_model: nn.Module) -> tuple[int, int]:
    """`(class tokens, register tokens)` before the patch tokens of a timm ViT (0, 0 for other towers)."""
    prefix = int(getattr(vision_model, "num_prefix_tokens", 0) or 0)
    registers = int(getattr(vision_model, "num_reg_tokens", 0) or 0)
    return prefix - registers, registers


def _patch_grid(vision_model: nn.Module, pixel_values: torch.Tensor, n_patches: int) -> tuple[int, int]:
    """`(grid_h, grid_w)` of `n_patches` patch tokens of a ViT on `pixel_values`."""
    patch = getattr(getattr(vision_model, "patch_embed", None), "patch_size", None)
    if patch is not None:
        grid = (pixel_values.shape[-2] // patch[0], pixel_values.shape[-1] // patch[1])
        if grid[0] * grid[1] == n_patches:
            return grid
    side = round(n_patches**0.5)
    if side * side != n_patches:
        raise ValueError(f"cannot lay {n_patches} patch tokens out on a grid")
    return side, side


class CLEFTSimilarityMapsMixin:
    """`similarity_maps` of `CLEFTModel` (needs `CLEFTFeaturesMixin` and `CLEFTZeroShotMixin`)."""

    @torch.no_grad()
    def similarity_maps(
        self,
        pixel_values: torch.FloatTensor,
        class_names: Sequence[str] | None = None,
        processor: Any = None,
        *,
        use_learned_prompts: bool = False,
        task: str | None = None,
        prompt_template: str | None = None,
        class_embeddings: torch.Tensor | None = None,
        **prompt_kwargs: Any,
    ) -> CLEFTSimilarityMaps:
        """Per class a map over the patch grid whose sum (+ CLS and register terms) is the zero-shot logit.

        Classes as in `zero_shot_classify` (hand prompts: `class_names` + `processor`; learned prompts:
        `use_learned_prompts=True`, `task=`; or `class_embeddings` `(n_classes, projection_dim)`, normalised).
        `pixel_values` `(batch, 3, H, W)` -> `CLEFTSimilarityMaps` (`patch_maps` `(batch, n_classes, gh, gw)`).
        """
        if self.config.image_pooling != "mean":
            raise ValueError(
                "similarity_maps needs image_pooling='mean' (the logit of 'cls' pooling does not "
                "decompose over tokens)"
            )
        projection = self.visual_projection
        if not isinstance(projection, nn.Linear):
            raise ValueError(
                f"similarity_maps needs a linear image projection, this model has "
                f"{type(projection).__name__} (an MLP head does not decompose over tokens)"
            )
        if class_embeddings is None:
            class_embeddings = self.cached_class_embeddings(
                class_names=class_names,
                processor=processor,
                prompt_template=prompt_template,
                use_learned_prompts=use_learned_prompts,
                task=task,
                **prompt_kwargs,
            )
        tokens = self.vision_forward(pixel_values).last_hidden_state
        if tokens.ndim == 4:  # CNN feature map (B, C, h, w) -> tokens (B, h*w, C)
            grid = tuple(tokens.shape[2:])
            tokens = tokens.flatten(2).transpose(1, 2)
            n_cls, n_reg = 0, 0
        else:
            n_cls, n_reg = _prefix_counts(self.vision_model)
            grid = _patch_grid(self.vision_model, pixel_values, tokens.shape[1] - n_cls - n_reg)
        projected = projection(tokens.to(projection.weight.dtype))  # (B, N, D): W x_i + b, mean = image feature
        n_tokens = projected.shape[1]
        feature_norm = projected.mean(dim=1).norm(dim=-1).clamp_min(1e-12)  # |f| as F.normalize divides by it
        scale = logit_scale_value(self.logit_scale)
        texts = class_embeddings.to(projected.device, projected.dtype)
        terms = scale * torch.einsum("bnd,kd->bkn", projected, texts) / (n_tokens * feature_norm[:, None, None])
        terms = terms + self.logit_bias.to(terms.dtype) / n_tokens
        logits = scale * torch.nn.functional.normalize(projected.mean(dim=1), dim=-1) @ texts.t() + self.logit_bias
        prefix = n_cls + n_reg
        return CLEFTSimilarityMaps(
            patch_maps=terms[:, :, prefix:].reshape(*terms.shape[:2], *grid),
            cls=terms[:, :, :n_cls].sum(-1) if n_cls else None,
            registers=terms[:, :, n_cls:prefix] if n_reg else None,
            logits=logits,
            class_names=list(class_names)
            if class_names is not None
            else (self.prompt_set(task)[1] if use_learned_prompts else None),
        )


__all__ = ["CLEFTSimilarityMaps", "CLEFTSimilarityMapsMixin"]
