"""Datasets and DataLoaders of the entry scripts: which loader a dataset name means, splits, transforms."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict

from ..data import (
    CHEXPERT_5X200_CLASSES,
    chexpert_caption,
    label_names,
    load_chexpert,
    load_embed,
    load_mimic_cxr,
    load_rsna_pneumonia,
    make_eval_transform,
    make_train_transform,
)
from .collator import ImageTextCollator

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {"validation": ("validation", "validate", "valid"), "test": ("test",), "train": ("train",)}


def load_named_dataset(name: str, data_root: str | None, **loader_kwargs: Any) -> DatasetDict:
    """The DatasetDict of a dataset family read from `data_root` (the synthetic demo is a MIMIC-CXR-like tree
    written by `cleft_hf.data.synthetic.write_demo_mimic_cxr`)."""
    if data_root is None:
        raise ValueError(f"dataset '{name}' needs data_root (for the demo data run `make demo` or write_demo_mimic_cxr)")
    loaders = {"mimic_cxr": load_mimic_cxr, "synthetic": load_mimic_cxr, "chexpert": load_chexpert,
               "rsna": load_rsna_pneumonia, "embed": load_embed}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(loaders)}")
    return loaders[name](data_root, **loader_kwargs)


def get_split(datasets: DatasetDict, split: str) -> Dataset:
    """`datasets[split]`, accepting the usual aliases (validation/validate/valid)."""
    for candidate in SPLIT_ALIASES.get(split, (split,)):
        if candidate in datasets:
            return datasets[candidate]
    raise ValueError(f"split {split!r} not found; the dataset has {list(datasets)}")


def restrict_labels(dataset: Dataset, class_names: Sequence[str]) -> Dataset:
    """Keep only the multi-hot columns of `class_names` in `labels` (and `label_mask`)."""
    names = label_names(dataset)
    missing = [name for name in class_names if name not in names]
    if missing:
        raise ValueError(f"classes {missing} are not among the dataset's labels {names}")
    columns = [names.index(name) for name in class_names]

    def select(batch: dict[str, list]) -> dict[str, list]:
        out = {"labels": [np.asarray(row, dtype=np.float32)[columns].tolist() for row in batch["labels"]]}
        if "label_mask" in batch:
            out["label_mask"] = [np.asarray(row, dtype=np.float32)[columns].tolist() for row in batch["label_mask"]]
        return out

    return dataset.map(select, batched=True, desc="selecting label columns")


def single_finding_set(dataset: Dataset, class_names: Sequence[str] = CHEXPERT_5X200_CLASSES) -> Dataset:
    """Images positive for exactly one of `class_names` (any number per class; for the balanced CheXpert
    5x200 protocol use `cleft_hf.data.build_chexpert_5x200`); labels become a ClassLabel over them."""
    names = label_names(dataset)
    missing = [name for name in class_names if name not in names]
    if missing:
        raise ValueError(f"classes {missing} are not among the dataset's labels {names}")
    columns = [names.index(name) for name in class_names]
    table = np.asarray(dataset.with_format("numpy")["labels"])[:, columns] == 1
    keep = np.flatnonzero(table.sum(axis=1) == 1)
    if len(keep) == 0:
        raise ValueError(f"no image is positive for exactly one of {list(class_names)}")
    subset = dataset.select(keep).remove_columns([c for c in ("labels", "label_mask") if c in dataset.column_names])
    return subset.add_column("labels", table[keep].argmax(axis=1).tolist(), feature=ClassLabel(names=list(class_names)))


def add_label_captions(dataset: Dataset) -> Dataset:
    """A `label_caption` column: the reference code's caption from the positive labels ("this is a chest x ray
    of a patient with cardiomegaly, edema"; "... with no finding" when none)."""
    if "positive_classes" not in dataset.column_names:
        raise ValueError("label captions need a multi-label dataset with a positive_classes column")
    names = dataset.features["positive_classes"].feature.names

    def caption(batch: dict[str, list]) -> dict[str, list]:
        return {"label_caption": [chexpert_caption([names[i] for i in row]) for row in batch["positive_classes"]]}

    return dataset.map(caption, batched=True, desc="label captions")


def make_loader(dataset: Dataset, processor: Any, *, shuffle: bool, batch_size: int, num_workers: int, seed: int,
                max_length: int | None = None, augment: dict | None = None, keep_columns: Sequence[str] = ("label_mask",),
                drop_last: bool | None = None, label_caption_prob: float = 0.0) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` with the image-text collator; the train transform with the `augment`
    settings (`{}` = defaults) when given, else the deterministic eval transform. With `label_caption_prob`,
    each text is replaced by its label caption with that probability."""
    if label_caption_prob > 0:
        dataset = add_label_captions(dataset)
        keep_columns = (*keep_columns, "label_caption")
    if augment is not None:
        transform = make_train_transform(processor.image_processor, seed=seed, keep_columns=keep_columns, **augment)
    else:
        transform = make_eval_transform(processor.image_processor, keep_columns=keep_columns)
    dataset = dataset.with_transform(transform)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle if drop_last is None else drop_last,
        num_workers=num_workers, collate_fn=ImageTextCollator(processor, max_length, label_caption_prob=label_caption_prob),
        generator=generator,
        persistent_workers=num_workers > 0,
    )
