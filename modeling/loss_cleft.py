"""Contrastive losses for CLEFT: symmetric InfoNCE (CLIP), sigmoid (SigLIP) and stage 2's multi-label BCE.

Multi-process runs: with `gather=True` each rank gathers the other ranks' embeddings WITH gradient
(`all_gather_with_grad` of `distributed_cleft.py`, like open_clip's `--gather-with-grad --local-loss`) so every
image sees the whole global batch as negatives. With `local_loss=True` a rank scores only its own rows against
all columns and its loss is scaled so that the MEAN over ranks equals the single-process loss on the
concatenated batch; DDP averages gradients over ranks and the gather's backward sums the gradient each rank
sends to every slice, so parameters receive exactly the gradient of that single-process loss. Ranks may hold
different batch sizes (the last batch of an epoch): the scaling uses the true global size.

Gradient accumulation: every micro-batch is its own contrastive problem (negatives come only from the same
micro-batch across ranks), so accumulating k micro-batches of size b is NOT the loss of one batch of size k*b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed_cleft import all_gather_no_grad, all_gather_with_grad, gather_sizes, world_size_and_rank

MAX_LOGIT_SCALE = 100.0


def logit_scale_value(logit_scale: torch.Tensor, max_logit_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """The multiplier of the cosine similarities: `exp(logit_scale)` clamped to `max_logit_scale` (CLIP's 100)."""
    return logit_scale.exp().clamp(max=max_logit_scale)


def _check_pair(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    if image_embeds.ndim != 2 or text_embeds.ndim != 2:
        raise ValueError(
            "image_embeds and text_embeds must be (B, D), "
            f"got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)} and text_embeds {tuple(text_embeds.shape)} "
            "must have the same shape"
        )


def _global_view(image_embeds, text_embeds, text_ids, gather):
    """All images, all texts, all ids (None if not given), this rank's row offset, global size, world size."""
    world_size, rank = world_size_and_rank()
    if not gather or world_size == 1:
        return image_embeds, text_embeds, text_ids, 0, image_embeds.shape[0], 1
    sizes = gather_sizes(image_embeds.shape[0], image_embeds.device)
    all_images = all_gather_with_grad(image_embeds, sizes)
    all_texts = all_gather_with_grad(text_embeds, sizes)
    all_ids = all_gather_no_grad(text_ids, sizes) if text_ids is not None else None
    return all_images, all_texts, all_ids, sum(sizes[:rank]), sum(sizes), world_size


def _positive_mask(row_ids, column_ids, num_rows, num_columns, offset, device) -> torch.Tensor:
    """(rows, columns) bool: the paired column, plus, when ids are given, every column with the same text id."""
    if row_ids is None:
        columns = torch.arange(num_columns, device=device)
        rows = torch.arange(num_rows, device=device) + offset
        return columns.unsqueeze(0) == rows.unsqueeze(1)
    return row_ids.unsqueeze(1) == column_ids.unsqueeze(0)


def _check_text_ids(text_ids: torch.Tensor | None, batch_size: int) -> None:
    if text_ids is not None and (text_ids.ndim != 1 or text_ids.shape[0] != batch_size):
        raise ValueError(f"text_ids must be (B,) = ({batch_size},), got {tuple(text_ids.shape)}")


def clip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    gather: bool = True,
    local_loss: bool = True,
    text_ids: torch.Tensor | None = None,
    max_logit_scale: float = MAX_LOGIT_SCALE,
) -> torch.Tensor:
    r"""Symmetric InfoNCE: mean of image->text and text->image cross-entropy over the similarity matrix.

    Args:
        image_embeds: `(B, D)` L2-normalised image embeddings of this rank.
        text_embeds: `(B, D)` L2-normalised text embeddings, row i paired with image i.
        logit_scale: scalar tensor, the LOG inverse temperature; `exp()` is clamped to `max_logit_scale` (CLIP).
        gather: in a multi-process run, use the other ranks' embeddings as negatives (with gradient).
            `False` reproduces the reference code (negatives from the per-GPU batch only).
        local_loss: score only this rank's rows against all columns (memory O(B x N) instead of O(N x N)).
            Either way the mean over ranks is the loss on the concatenated batch (see module docstring).
        text_ids: optional `(B,)` integer id per caption (e.g. a hash of the text or of the label set); pairs
            with identical ids count as positives (multi-positive soft targets) instead of false negatives.
            This matters when one caption is embedded differently (dropout, augmentation, or another rank's
            forward); for bit-identical embeddings the columns are indistinguishable and one-hot targets
            already give the same gradient.
        max_logit_scale: upper bound of `logit_scale.exp()`.

    Returns:
        Scalar float32 loss of this rank (logits are cast to float32, so bf16/fp16 embeddings are fine). With
        uneven batches it is scaled by `world_size * B / N`, so `accelerator.gather(loss).mean()` is the loss
        of the global batch.
    """
    _check_pair(image_embeds, text_embeds)
    _check_text_ids(text_ids, image_embeds.shape[0])
    scale = logit_scale_value(logit_scale, max_logit_scale)
    view = _global_view(image_embeds, text_embeds, text_ids, gather)
    all_images, all_texts, all_ids, offset, total, world_size = view
    if local_loss:
        images_to_texts = scale * (image_embeds @ all_texts.T).float()  # (B, N)
        texts_to_images = scale * (text_embeds @ all_images.T).float()  # (B, N)
        row_ids, denominator = text_ids, total / world_size
    else:
        images_to_texts = scale * (all_images @ all_texts.T).float()  # (N, N)
        texts_to_images = images_to_texts.T
        row_ids, offset, denominator = all_ids, 0, total
    rows, columns = images_to_texts.shape
    if row_ids is None:  # one positive per row: class-index targets
        targets = torch.arange(rows, device=images_to_texts.device) + offset
    else:  # soft targets spread uniformly over the columns sharing the row's caption id
        targets = (row_ids.unsqueeze(1) == all_ids.unsqueeze(0)).to(images_to_texts.dtype)
        targets = targets / targets.sum(dim=1, keepdim=True)
    loss = F.cross_entropy(images_to_texts, targets, reduction="sum")
    loss = loss + F.cross_entropy(texts_to_images, targets, reduction="sum")
    return loss / (2 * denominator)


def siglip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    *,
    gather: bool = True,
    text_ids: torch.Tensor | None = None,
    max_logit_scale: float = MAX_LOGIT_SCALE,
) -> torch.Tensor:
    r"""Sigmoid loss (SigLIP): every image-text pair is a binary problem, positives on the diagonal.

    `loss = -sum_ij log sigmoid(z_ij * (exp(logit_scale) * <x_i, y_j> + logit_bias)) / N`, z = +1 for a pair
    (or an identical `text_ids`), else -1. In a multi-process run this rank's images meet the texts of all
    ranks (gathered with gradient); the mean over ranks equals the single-process loss on the global batch.

    Args:
        image_embeds, text_embeds: `(B, D)` L2-normalised, row i paired.
        logit_scale: scalar log temperature (SigLIP initialises it to log 10).
        logit_bias: scalar bias (SigLIP initialises it to -10).
        gather, text_ids, max_logit_scale: as in `clip_loss`.
    """
    _check_pair(image_embeds, text_embeds)
    _check_text_ids(text_ids, image_embeds.shape[0])
    scale = logit_scale_value(logit_scale, max_logit_scale)
    _, all_texts, all_ids, offset, total, world_size = _global_view(image_embeds, text_embeds, text_ids, gather)
    logits = scale * (image_embeds @ all_texts.T).float() + logit_bias  # (B, N)
    positives = _positive_mask(text_ids, all_ids, logits.shape[0], logits.shape[1], offset, logits.device)
    signs = positives.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / (total / world_size)


def multilabel_bce_prompt_loss(
    logits: torch.Tensor, multi_hot_labels: torch.Tensor, label_mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Stage-2 multi-label loss: binary cross-entropy of every image against every class prompt.

    Args:
        logits: `(B, C)` image-vs-class-prompt logits (scaled similarities; include a bias, or the sigmoid of
            `scale * cosine` is badly calibrated).
        multi_hot_labels: `(B, C)` targets in [0, 1].
        label_mask: optional `(B, C)` weights; 0 drops an entry (e.g. CheXpert's uncertain or blank labels).

    Returns:
        Scalar mean over the kept entries.
    """
    if logits.ndim != 2 or logits.shape != multi_hot_labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and multi_hot_labels {tuple(multi_hot_labels.shape)} must both be (B, C)"
        )
    targets = multi_hot_labels.to(logits.dtype)
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise ValueError("multi_hot_labels must lie in [0, 1] (mask uncertain labels with label_mask)")
    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if label_mask is None:
        return losses.mean()
    if label_mask.shape != logits.shape:
        raise ValueError(f"label_mask {tuple(label_mask.shape)} must match logits {tuple(logits.shape)}")
    weights = label_mask.to(logits.dtype)
    return (losses * weights).sum() / weights.sum().clamp(min=1)


__all__ = ["MAX_LOGIT_SCALE", "clip_loss", "logit_scale_value", "multilabel_bce_prompt_loss", "siglip_loss"]
