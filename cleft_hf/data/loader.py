"""The DataLoader of training and evaluation: dataset -> transform -> image-text collator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset
import torch

from .collator import ImageTextCollator
from .label_views import add_label_captions
from .registry import DatasetSpec
from .transforms import make_eval_transform, make_train_transform, with_image_transform


def make_loader(
    dataset: Dataset,
    processor: Any,
    *,
    shuffle: bool,
    batch_size: int,
    num_workers: int,
    seed: int,
    max_length: int | None = None,
    augment: dict | None = None,
    keep_columns: Sequence[str] = ("label_mask",),
    drop_last: bool | None = None,
    label_caption_prob: float = 0.0,
    spec: DatasetSpec | None = None,
    task: str | None = None,
    skip_bad: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` with the image-text collator; the train transform with the `augment`
    settings (`{}` = defaults) when given, else the deterministic eval transform. With `label_caption_prob`,
    each text is replaced by its label caption (built by the dataset's `spec`) with that probability. Images are
    decoded by the transform (a decode error names the file); with `skip_bad`, undecodable images are dropped
    from their batch and listed in its `skipped_images`."""
    if label_caption_prob > 0:
        if spec is None:
            raise ValueError("label_caption_prob > 0 needs the dataset's spec to build label captions")
        dataset = add_label_captions(dataset, spec, task)
        keep_columns = (*keep_columns, "label_caption")
    if augment is not None:
        transform = make_train_transform(
            processor.image_processor, seed=seed, keep_columns=keep_columns, skip_bad=skip_bad, **augment
        )
    else:
        transform = make_eval_transform(processor.image_processor, keep_columns=keep_columns, skip_bad=skip_bad)
    dataset = with_image_transform(dataset, transform)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle if drop_last is None else drop_last,
        num_workers=num_workers,
        collate_fn=ImageTextCollator(processor, max_length, label_caption_prob=label_caption_prob),
        generator=generator,
        persistent_workers=num_workers > 0,
    )
