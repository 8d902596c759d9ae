"""Image-to-text and text-to-image retrieval recall@K over paired embeddings (local `recall_at_k` metric)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..metrics import load_metric


def correct_candidates(texts: Sequence[str] | None, n: int) -> list[list[int]]:
    """Correct candidate indices per row: the paired row, plus rows with an identical text when given."""
    if texts is None:
        return [[index] for index in range(n)]
    groups: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        groups.setdefault(text, []).append(index)
    return [groups[text] for text in texts]


def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    texts: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[int, float]]:
    """R@K both ways for matching rows of `image_embeds` `(N, D)` and `text_embeds` `(N, D)`.

    Identical texts (several images sharing a caption) count as correct matches both ways.
    Returns `{"image_to_text": {K: recall}, "text_to_image": {K: recall}, "mean": {K: mean of both}}`, in [0, 1].
    """
    n = image_embeds.shape[0]
    if text_embeds.shape[0] != n:
        raise ValueError(f"retrieval needs paired rows: {n} images vs {text_embeds.shape[0]} texts")
    similarity = (image_embeds.float() @ text_embeds.float().t()).tolist()
    transposed = [list(column) for column in zip(*similarity)]
    references = correct_candidates(texts, n)
    metric = load_metric("recall_at_k", "multi")
    i2t = metric.compute(predictions=similarity, references=references, k=list(ks))
    t2i = metric.compute(predictions=transposed, references=references, k=list(ks))
    results = {
        "image_to_text": {k: float(i2t[f"recall_at_{k}"]) for k in ks},
        "text_to_image": {k: float(t2i[f"recall_at_{k}"]) for k in ks},
    }
    results["mean"] = {k: (results["image_to_text"][k] + results["text_to_image"][k]) / 2 for k in ks}
    return results
