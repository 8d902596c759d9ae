"""Views of a loaded split for training and evaluation: split aliases, the label columns of chosen classes,
single-label evaluation sets, label captions. Multi-label rows carry multi-hot `labels` (+ `label_mask`,
`positive_classes`); single-label rows a ClassLabel."""

from __future__ import annotations

from collections.abc import Sequence

from datasets import ClassLabel, Dataset, DatasetDict, List, Value
import numpy as np

from ._tables import column_values, index_lists_to_mask, label_names
from .chexpert import build_chexpert_5x200
from .registry import DatasetSpec
from .splits import build_balanced_split, select_with_columns, select_with_labels

SPLIT_ALIASES = {"validation": ("validation", "validate", "valid"), "test": ("test",), "train": ("train",)}


def get_split(datasets: DatasetDict, split: str) -> Dataset:
    """`datasets[split]`, accepting the usual aliases (validation/validate/valid)."""
    for candidate in SPLIT_ALIASES.get(split, (split,)):
        if candidate in datasets:
            return datasets[candidate]
    raise ValueError(f"split {split!r} not found; the dataset has {list(datasets)}")


def _columns_of(dataset: Dataset, class_names: Sequence[str]) -> list[int]:
    names = label_names(dataset)
    missing = [name for name in class_names if name not in names]
    if missing:
        raise ValueError(f"classes {missing} are not among the dataset's labels {names}")
    return [names.index(name) for name in class_names]


def restrict_labels(dataset: Dataset, class_names: Sequence[str]) -> Dataset:
    """Multi-hot `labels` (and `label_mask`) over `class_names` only, for stage 2.

    Multi-label datasets keep those columns; single-label (ClassLabel) datasets keep the rows of those classes
    and get the one-hot rows over them, so both kinds train with the same losses.
    """
    columns = _columns_of(dataset, class_names)
    if isinstance(dataset.features["labels"], ClassLabel):
        labels = column_values(dataset, "labels")
        kept = np.flatnonzero(np.isin(labels, columns))
        if len(kept) == 0:
            raise ValueError(f"no image of the classes {list(class_names)} in this split")
        one_hot = (labels[kept, None] == np.asarray(columns)[None, :]).astype(np.float32)
        return select_with_columns(dataset, kept, {"labels": (one_hot, List(Value("float32")))})
    width = len(label_names(dataset))
    new = {
        "labels": (
            column_values(dataset, "labels").reshape(len(dataset), width)[:, columns].astype(np.float32),
            List(Value("float32"), length=len(columns)),
        )
    }
    if "label_mask" in dataset.column_names:
        mask = column_values(dataset, "label_mask").reshape(len(dataset), width)[:, columns].astype(np.float32)
        new["label_mask"] = (mask, List(Value("float32"), length=len(columns)))
    return select_with_columns(dataset, None, new)


def single_finding_set(dataset: Dataset, class_names: Sequence[str]) -> Dataset:
    """Images positive for exactly one of `class_names` (any number per class; for the balanced CheXpert
    5x200 protocol use `build_chexpert_5x200`); labels become a ClassLabel over them."""
    columns = _columns_of(dataset, class_names)
    width = len(label_names(dataset))
    table = column_values(dataset, "labels").reshape(len(dataset), width)[:, columns] == 1
    keep = np.flatnonzero(table.sum(axis=1) == 1)
    if len(keep) == 0:
        raise ValueError(f"no image is positive for exactly one of {list(class_names)}")
    return select_with_labels(dataset, keep, table[keep].argmax(axis=1), class_names)


def single_label_split(
    dataset: Dataset,
    spec: DatasetSpec,
    task: str | None = None,
    class_names: Sequence[str] | None = None,
    balanced_per_class: int | None = None,
    seed: int = 0,
) -> tuple[Dataset, list[str]]:
    """A single-label evaluation view and its class names: ClassLabel datasets as they are (restricted to
    `class_names`); multi-label ones reduced to the images with exactly one of the task's classes.
    `balanced_per_class` draws that many per class (the CheXpert 5x200 rule for multi-label CXR data)."""
    names = list(class_names or spec.task(task).class_names)
    if isinstance(dataset.features["labels"], ClassLabel):
        if list(dataset.features["labels"].names) != names:
            columns = _columns_of(dataset, names)
            labels = column_values(dataset, "labels")
            keep = np.flatnonzero(np.isin(labels, columns))
            position = np.full(max(labels.max(initial=0), max(columns)) + 1, -1)
            position[columns] = np.arange(len(columns))
            dataset = select_with_labels(dataset, keep, position[labels[keep]], names, drop=("labels",))
        if balanced_per_class:
            dataset = build_balanced_split(dataset, balanced_per_class, seed=seed)
        return dataset, names
    if balanced_per_class and not class_names and spec.multi_label:
        return build_chexpert_5x200(dataset, seed=seed, n_per_class=balanced_per_class), names
    subset = single_finding_set(dataset, names)
    if balanced_per_class:
        subset = build_balanced_split(subset, balanced_per_class, seed=seed)
    return subset, names


def add_label_captions(dataset: Dataset, spec: DatasetSpec, task: str | None = None) -> Dataset:
    """A `label_caption` column: the caption built from the image's labels ("this is a chest x ray of a patient
    with cardiomegaly, edema"; "... with no finding" when none; single-label datasets: the class's hand prompt)."""
    feature = dataset.features["labels"]
    if isinstance(feature, ClassLabel):
        prompts = np.asarray(spec.hand_prompts(task, feature.names), dtype=object)
        captions = prompts[column_values(dataset, "labels")]
    elif "positive_classes" in dataset.column_names:
        names = dataset.features["positive_classes"].feature.names
        positives = index_lists_to_mask(dataset, "positive_classes", len(names))
        patterns, inverse = np.unique(positives, axis=0, return_inverse=True)  # one caption per label pattern
        texts = [spec.label_caption([names[i] for i in np.flatnonzero(row)]) for row in patterns]
        captions = np.asarray(texts, dtype=object)[inverse.reshape(-1)]
    else:
        raise ValueError("label captions need class labels: a ClassLabel or a positive_classes column")
    return select_with_columns(dataset, None, {"label_caption": (captions, Value("string"))})
