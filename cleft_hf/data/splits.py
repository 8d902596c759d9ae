"""Balanced evaluation splits: n examples per class, drawn without replacement, deterministic for a seed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import ClassLabel, Dataset, Features
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._tables import column_values, dataset_from_columns, label_names


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
    indices = balanced_indices(
        column_values(dataset, label_column), n_per_class, label_names(dataset, label_column), seed
    )
    return dataset.select(indices)


def select_with_columns(
    dataset: Dataset, indices: Sequence[int] | None, columns: dict[str, tuple[Any, Any]], drop: Sequence[str] = ()
) -> Dataset:
    """Rows ``indices`` (None: all) of ``dataset`` with new or replaced ``columns`` ({name: (values, feature)},
    values with one entry per selected row) and the ``drop`` columns removed. One Arrow gather: ``select`` +
    ``add_column`` / ``map`` instead take tens of seconds on 100k-row datasets."""
    kept = [name for name in dataset.column_names if name not in drop and name not in columns]
    table = dataset.select_columns(kept).with_format("arrow")[:]  # a slice (or one gather of an indices mapping)
    if indices is not None:  # Arrow's take (datasets' per-row gather leaves one chunk per row: slow to combine)
        table = table.take(pa.array(np.asarray(indices, dtype=np.int64)))
    features = Features(
        {
            **{name: dataset.features[name] for name in kept},
            **{name: feature for name, (_, feature) in columns.items()},
        }
    )
    values = {name: table.column(name).combine_chunks() for name in kept}
    values.update({name: value for name, (value, _) in columns.items()})
    return dataset_from_columns(values, features)


def select_with_labels(
    dataset: Dataset,
    indices: Sequence[int],
    labels: Sequence[int],
    class_names: Sequence[str],
    drop: Sequence[str] = ("labels", "label_mask"),
) -> Dataset:
    """Rows ``indices`` of ``dataset`` with ``labels`` (one class index per row) as a ClassLabel column over
    ``class_names``, the ``drop`` columns removed (see :func:`select_with_columns`)."""
    labels = (np.asarray(labels, dtype=np.int64), ClassLabel(names=list(class_names)))
    return select_with_columns(dataset, indices, {"labels": labels}, drop)


def exclude_images(dataset: Dataset, excluded: Dataset, column: str = "path") -> Dataset:
    """``dataset`` without the rows whose ``column`` value (default the CSV path) occurs in ``excluded``: e.g. the
    CheXpert training split without the images of the 5x200 test set drawn from it."""
    for name, part in ((column, dataset), (column, excluded)):
        if name not in part.column_names:
            raise ValueError(f"exclude_images needs a '{name}' column in both datasets (has {part.column_names})")
    values = dataset.select_columns([column]).with_format("arrow")[:].column(column)
    drop = pc.is_in(
        values, value_set=excluded.select_columns([column]).with_format("arrow")[:].column(column).combine_chunks()
    )
    return select_with_columns(
        dataset, np.flatnonzero(~np.asarray(drop.to_numpy(zero_copy_only=False), dtype=bool)), {}
    )
