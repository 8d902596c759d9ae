"""Shared helpers of the dataset loaders: table lookup/reading, column and label checks, image checks,
multi-label encoding, patient-level splits and the load report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value
from datasets.table import InMemoryTable
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")


@dataclass
class LoadReport:
    """What a loader kept and dropped. Returned by loaders called with ``return_report=True``."""

    dataset: str
    rows: dict[str, int] = field(default_factory=dict)  # split -> kept rows
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    bad_images: list[str] = field(default_factory=list)  # unreadable / missing files skipped (skip_bad=True)
    no_text: list[str] = field(default_factory=list)  # ids of studies without usable report text
    text_sources: dict[str, int] = field(default_factory=dict)  # "findings+impression" / "fallback" ... -> studies
    fallback_with_headings: list[str] = field(default_factory=list)  # ids whose fallback text has admin headings

    @property
    def n_bad_images(self) -> int:
        return len(self.bad_images)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def log(self) -> None:
        logger.info("%s: kept rows per split %s", self.dataset, self.rows)
        for reason, count in self.dropped.items():
            logger.info("%s: dropped %d rows (%s)", self.dataset, count, reason)
        if self.bad_images:
            logger.warning(
                "%s: skipped %d unreadable or missing images, e.g. %s",
                self.dataset,
                len(self.bad_images),
                self.bad_images[:3],
            )
        if self.text_sources:
            total = sum(self.text_sources.values())
            shares = ", ".join(
                f"{name} {100 * count / total:.1f} %"
                for name, count in sorted(self.text_sources.items(), key=lambda item: -item[1])
            )
            logger.info("%s: report text source per study (%d studies): %s", self.dataset, total, shares)
        if self.fallback_with_headings:
            logger.warning(
                "%s: %d fallback report texts contain administrative headings (EXAMINATION:, INDICATION: ...), "
                "so whole unparsed reports may be used as text, e.g. %s",
                self.dataset,
                len(self.fallback_with_headings),
                self.fallback_with_headings[:5],
            )
        if self.no_text:
            logger.warning(
                "%s: %d studies have no usable report text and were dropped, e.g. %s",
                self.dataset,
                len(self.no_text),
                self.no_text[:5],
            )


def require_root(root: str | os.PathLike, what: str) -> Path:
    """The dataset folder as a Path; FileNotFoundError naming it when it does not exist."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} root folder not found: {path}")
    return path


def find_table(folders: Sequence[Path], name: str, required: bool = True) -> Path | None:
    """First of ``folder/name`` or ``folder/name.gz`` that exists (tables ship plain or gzipped)."""
    candidates = [folder / variant for folder in folders for variant in (name, name + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"table {name} (or {name}.gz) not found; looked for {[str(c) for c in candidates]}")
    return None


def read_table(path: Path, columns: Iterable[str], dtype: dict | None = None) -> pd.DataFrame:
    """Read a CSV (plain or .gz); ValueError naming the column and file when a required column is missing."""
    try:
        frame = pd.read_csv(path, dtype=dtype, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"cannot read table {path}: {err}") from err
    require_columns(frame, columns, path)
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path | str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"column '{missing[0]}' missing from {path} (missing: {missing})")


def check_values(
    values: pd.Series, allowed: Iterable, column: str, path: Path | str, allow_blank: bool = True
) -> None:
    """ValueError naming column, file and offending values when a column holds values outside ``allowed``."""
    allowed = set(allowed)
    present = values.dropna() if allow_blank else values
    bad = sorted({v for v in present.unique().tolist() if not _allowed_value(v, allowed)}, key=_value_order)
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(
            f"column '{column}' in {path} has values outside {sorted(allowed, key=_value_order)}: {bad[:10]}{more}"
        )


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _allowed_value(value, allowed: set) -> bool:
    """`value` is in `allowed`, also as the text of an allowed number ("2" for 2: a column read as text)."""
    if value in allowed:
        return True
    number = _number(value)
    return number is not None and any(_number(a) == number for a in allowed if not isinstance(a, str))


def _value_order(value) -> tuple:
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def encode_multilabel(raw: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """CheXpert-style label matrix (N, K) with 1, 0, -1 (uncertain) or NaN (blank) to (labels, mask).

    labels (N, K) float32 multi-hot: blank -> 0; uncertain -> 0 ("zeros"), 1 ("ones") or 0 with mask 0
    ("ignore"). mask (N, K) float32: 1 where the label counts, 0 where it is ignored.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    uncertain = raw == -1
    labels = (raw == 1).astype(np.float32)
    mask = np.ones_like(labels)
    if policy == "ones":
        labels[uncertain] = 1.0
    elif policy == "ignore":
        mask[uncertain] = 0.0
    return labels, mask


def multilabel_features(class_names: Sequence[str]) -> dict:
    """Features of the multi-label columns; the class names live in ``positive_classes``/``uncertain_classes``."""
    k = len(class_names)
    return {
        "labels": List(Value("float32"), length=k),
        "label_mask": List(Value("float32"), length=k),
        "positive_classes": List(ClassLabel(names=list(class_names))),
        "uncertain_classes": List(ClassLabel(names=list(class_names))),
    }


def index_lists(mask: np.ndarray) -> pa.ListArray:
    """(N, K) bool mask -> Arrow list array of the True column indices per row (built without Python loops)."""
    counts = mask.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.nonzero(mask)[1].astype(np.int64)))


def multilabel_columns(raw: np.ndarray, policy: str) -> dict[str, Any]:
    """Column values matching :func:`multilabel_features` for a raw (N, K) label matrix: (N, K) float32 arrays for
    ``labels`` / ``label_mask`` and Arrow index lists for ``positive_classes`` / ``uncertain_classes``, ready for
    :func:`dataset_from_columns`."""
    labels, mask = encode_multilabel(raw, policy)
    return {
        "labels": labels,
        "label_mask": mask,
        "positive_classes": index_lists(labels == 1),
        "uncertain_classes": index_lists(raw == -1),
    }


def _arrow_values(value: Any, feature: Any) -> pa.Array:
    if isinstance(feature, Image) and not (isinstance(value, pa.Array) and pa.types.is_struct(value.type)):
        # stored like datasets stores image files: {"bytes": null, "path": str}
        paths = pa.array(
            np.asarray(value, dtype=object).tolist() if not isinstance(value, pa.Array) else value, pa.string()
        )
        return pa.StructArray.from_arrays([pa.nulls(len(paths), pa.binary()), paths], names=["bytes", "path"])
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(value).ravel()), value.shape[1])
    if isinstance(value, np.ndarray) and value.dtype != object:
        return pa.array(value)
    return pa.array(list(value))


def take(value: Any, rows: np.ndarray) -> Any:
    """Rows of a column value (numpy array, Arrow array or list)."""
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value.take(pa.array(rows, pa.int64()))
    if isinstance(value, np.ndarray):
        return value[rows]
    return [value[i] for i in rows]


def dataset_from_columns(columns: dict[str, Any], features: Features) -> Dataset:
    """A Dataset built straight from column arrays (numpy 1-D/2-D, Arrow arrays, lists) cast to ``features``;
    far faster than ``Dataset.from_dict`` on Python lists for 100k+ rows."""
    arrays = [_arrow_values(columns[name], feature) for name, feature in features.items()]
    table = pa.Table.from_arrays(arrays, names=list(features)).cast(features.arrow_schema)
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features))


def check_choice(name: str, value: Any, choices: Sequence) -> None:
    """ValueError naming the argument and its valid values (called before any file is read)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_split_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"split_fractions must be 3 non-negative numbers (train, validation, test), got {fractions}")


def finish_load(result: DatasetDict, report: LoadReport, return_report: bool):
    """Log the report and return ``result`` (with the report); the same one-line error for every loader when no
    image is left."""
    if not any(len(split) for split in result.values()):
        bad = (
            f"{report.n_bad_images} unreadable or missing images skipped, e.g. {report.bad_images[0]}; "
            if report.bad_images
            else ""
        )
        dropped = ", ".join(f"{reason}: {count}" for reason, count in report.dropped.items()) or "nothing"
        raise ValueError(
            f"{report.dataset}: no images left to load ({bad}rows dropped: {dropped}); "
            "check the dataset folder and the loader's filters"
        )
    report.log()
    return (result, report) if return_report else result


def _arrow_column(dataset: Dataset, column: str):
    return dataset.select_columns([column]).with_format("arrow")[:].column(column).combine_chunks()


def column_values(dataset: Dataset, column: str) -> np.ndarray:
    """A scalar column (N,) or a list column of one width (N, K) as numpy, read in one go through Arrow.

    ``dataset[column]`` is lazy in recent ``datasets`` and decodes row by row, far too slow for whole columns.
    """
    values = _arrow_column(dataset, column)
    if pa.types.is_fixed_size_list(values.type):
        return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), values.type.list_size)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):  # lists of one common length
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if len(values) and (lengths == lengths[0]).all():
            return pc.list_flatten(values).to_numpy(zero_copy_only=False).reshape(len(values), int(lengths[0]))
        raise ValueError(
            f"column '{column}' holds lists of different lengths; expected one value or one width per row"
        )
    return values.to_numpy(zero_copy_only=False)


def index_lists_to_mask(dataset: Dataset, column: str, width: int) -> np.ndarray:
    """(N, width) bool mask from a column of variable-length lists of class indices."""
    values = _arrow_column(dataset, column)
    mask = np.zeros((len(values), width), dtype=bool)
    rows = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
    mask[rows, pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(int)] = True
    return mask


def label_names(dataset: Dataset, column: str = "labels") -> list[str]:
    """Class names of a dataset's labels: a ClassLabel's names, or the multi-label names in ``positive_classes``."""
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if "positive_classes" in dataset.features:
        return list(dataset.features["positive_classes"].feature.names)
    raise ValueError(
        f"column '{column}' carries no class names (neither ClassLabel nor multi-label with positive_classes)"
    )


def assign_splits(groups: Sequence, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split name per row so that every group (patient) falls in one split; deterministic for a seed.

    ``fractions`` are the train/validation/test shares of the groups (they are normalised).
    """
    check_split_fractions(fractions)
    unique = np.array(sorted({str(g) for g in groups}))
    order = np.random.default_rng(seed).permutation(len(unique))
    shares = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
    bounds = np.round(np.cumsum(shares) * len(unique)).astype(int)
    split_of_rank = np.searchsorted(bounds, np.arange(len(unique)), side="right")
    split_of_group = dict(zip(unique[order], np.array(SPLIT_NAMES)[np.minimum(split_of_rank, 2)]))
    return np.array([split_of_group[str(g)] for g in groups])


def split_dataset_dict(
    split_of: np.ndarray,
    columns: dict[str, Any] | Callable[[np.ndarray], dict[str, Any]],
    features: Features,
    report: LoadReport,
    splits: Sequence[str] = SPLIT_NAMES,
) -> DatasetDict:
    """One Dataset per split name in ``split_of`` (N,): ``columns`` are full-length column values (rows are taken
    per split) or a function of the row indices; empty splits are left out and the kept counts go to ``report``."""
    result = DatasetDict()
    for name in splits:
        rows = np.flatnonzero(split_of == name)
        if len(rows):
            part = columns(rows) if callable(columns) else {key: take(value, rows) for key, value in columns.items()}
            result[name] = dataset_from_columns(part, features)
            report.rows[name] = len(result[name])
    return result
