"""Balanced evaluation splits: n examples per class, drawn without replacement, deterministic for a seed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from datasets import ClassLabel, Dataset

from ._tables import column_values, label_names


def balanced_indices(labels: Sequence[int], n_per_class: int, class_names: Sequence[str], seed: int) -> list[int]:
    """Row indices: ``n_per_class`` of each class (class-major order, random within a class).

    Raises ValueError naming the class when it has fewer than ``n_per_class`` candidates.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for index, name in enumerate(class_names):
        candidates = np.flatnonzero(labels == index)
        if len(candidates) < n_per_class:
            raise ValueError(f"class '{name}' has only {len(candidates)} candidate examples, {n_per_class} requested")
        chosen.extend(np.sort(rng.choice(candidates, size=n_per_class, replace=False)).tolist())
    return chosen


def build_balanced_split(dataset: Dataset, n_per_class: int, seed: int = 0, label_column: str = "labels") -> Dataset:
    """``n_per_class`` rows of every class of a single-label (ClassLabel) dataset."""
    feature = dataset.features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"column '{label_column}' must be a ClassLabel to build a balanced split, got {feature}")
    indices = balanced_indices(column_values(dataset, label_column), n_per_class, label_names(dataset, label_column), seed)
    return dataset.select(indices)
