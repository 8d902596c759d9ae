"""CheXpert (Irvin et al. 2019): ``train.csv`` / ``valid.csv`` (+ optional ``test.csv``) with a ``Path`` column that
starts with the dataset folder's own name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``).

Captions follow the CLEFT reference: "this is a chest x ray of a patient with {positives}" and, with
``caption_negatives``, " but this image has no {explicitly negative findings}" (class names lower-cased).
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import os
from pathlib import Path
import re

from datasets import Dataset, DatasetDict, Features, Image, Value
import numpy as np
import pandas as pd

from ..modeling.configuration_cleft import DEFAULT_PROMPT_TEMPLATE
from ._tables import (
    UNCERTAIN_POLICIES,
    LoadReport,
    check_choice,
    check_values,
    column_values,
    dataset_from_columns,
    finish_load,
    index_lists_to_mask,
    label_names,
    multilabel_columns,
    multilabel_features,
    read_table,
    require_root,
)
from .image_checks import VERIFY_MODES, pil_decode, pil_header, verify_images
from .load_cache import cached_load
from .resized_cache import find_resized, manifest_file, use_resized
from .splits import balanced_indices, exclude_images, select_with_labels

logger = logging.getLogger(__name__)

CHEXPERT_CLASSES = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_5X200_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
CHEXPERT_BASE_CAPTION = DEFAULT_PROMPT_TEMPLATE.replace("{}", "")  # "this is a chest x ray of a patient with "
CHEXPERT_NEGATIVE_CAPTION = " but this image has no "
_CSV_SPLITS = {"train": "train.csv", "validation": "valid.csv", "test": "test.csv"}
_META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
_PATIENT_STUDY = re.compile(r"(patient\d+)/(study\d+)")


def chexpert_caption(positives: Sequence[str], negatives: Sequence[str] = ()) -> str:
    """CLEFT reference caption from label names; no positive finding reads "no finding"."""
    caption = CHEXPERT_BASE_CAPTION + (", ".join(name.lower() for name in positives) or "no finding")
    if negatives:
        caption += CHEXPERT_NEGATIVE_CAPTION + ", ".join(name.lower() for name in negatives)
    return caption


def _csv_folder(root: Path) -> Path:
    """Folder holding the CSVs: the root itself or its one sub-folder that has them (e.g. CheXpert-v1.0-small); a
    root holding several such folders (CheXpert-v1.0 and CheXpert-v1.0-small) is an error naming them."""
    if any((root / name).is_file() for name in _CSV_SPLITS.values()):
        return root
    nested = sorted({p.parent for name in ("train.csv", "valid.csv") for p in root.glob(f"*/{name}")})
    if len(nested) > 1:
        raise ValueError(
            f"{root} holds several CheXpert folders ({', '.join(n.name for n in nested)}); "
            f"pass the one to load as root, e.g. {nested[0]}"
        )
    if nested:
        return nested[0]
    raise FileNotFoundError(f"CheXpert table train.csv / valid.csv not found in {root} or its sub-folders")


def resolve_prefixed_paths(root: Path, relative: pd.Series, probe_rows: int = 20) -> np.ndarray:
    """Map the CSV paths, which start with the dataset folder's name, onto ``root`` (that folder or its parent).

    The mapping (keep or drop the first component) is decided on the first rows whose file exists, then applied
    to all rows at once (vectorised string operations, no per-row file-system calls)."""
    relative = relative.astype(str).str.replace("\\", "/", regex=False)
    head_rest = relative.str.split("/", n=1, expand=True).reindex(columns=[0, 1])
    rest = head_rest[1].fillna("")
    strip = None
    for full, stripped in zip(relative.iloc[:probe_rows], rest.iloc[:probe_rows]):
        if (root / full).exists():
            strip = False
        elif stripped and (root / stripped).exists():
            strip = True
        if strip is not None:
            break
    if strip is None and len(relative):
        strip = root.name == head_rest[0].iloc[0] and bool(rest.iloc[0])
    base = str(root) + os.sep
    return (base + (rest.where(rest != "", relative) if strip else relative)).to_numpy(dtype=object)


def _captions(raw: np.ndarray, labels: np.ndarray, caption_negatives: bool) -> np.ndarray:
    """Caption per row, built once per distinct label pattern (CheXpert: a few thousand patterns for 223k rows)."""
    pattern = np.concatenate([np.nan_to_num(raw, nan=9.0), labels], axis=1)
    unique, inverse = np.unique(pattern, axis=0, return_inverse=True)
    k = raw.shape[1]
    texts = []
    for row in unique:
        positives = [CHEXPERT_CLASSES[i] for i in np.flatnonzero(row[k:] == 1)]
        negatives = [CHEXPERT_CLASSES[i] for i in np.flatnonzero(row[:k] == 0) if CHEXPERT_CLASSES[i] != "No Finding"]
        texts.append(chexpert_caption(positives, negatives if caption_negatives else ()))
    return np.asarray(texts, dtype=object)[inverse.reshape(-1)]


def _features() -> Features:
    return Features(
        {
            "image": Image(),
            "text": Value("string"),
            **multilabel_features(CHEXPERT_CLASSES),
            "path": Value("string"),
            "patient_id": Value("string"),
            "study": Value("string"),
            "sex": Value("string"),
            "age": Value("float32"),
            "view": Value("string"),
            "ap_pa": Value("string"),
        }
    )


def _load_split(
    root: Path,
    csv_path: Path,
    split: str,
    uncertain: str,
    frontal_only: bool,
    caption_negatives: bool,
    verify: str,
    skip_bad: bool,
    resized_dir: Path | None,
    report: LoadReport,
) -> Dataset:
    frame = read_table(csv_path, _META_COLUMNS + CHEXPERT_CLASSES)
    for column in CHEXPERT_CLASSES:
        check_values(frame[column], (1, 0, -1), column, csv_path)
    if frontal_only:
        frontal = frame["Frontal/Lateral"].astype(str).str.lower() == "frontal"
        report.drop(f"{split}: lateral views", int((~frontal).sum()))
        frame = frame[frontal].reset_index(drop=True)
    paths = use_resized(root, resized_dir, resolve_prefixed_paths(root, frame["Path"]))
    keep = verify_images(paths, verify, skip_bad, report, pil_header, pil_decode)
    frame, paths = frame[keep].reset_index(drop=True), paths[keep]
    raw = frame[list(CHEXPERT_CLASSES)].to_numpy(dtype=np.float32)
    columns = multilabel_columns(raw, uncertain)
    ids = frame["Path"].astype(str).str.replace("\\", "/", regex=False).str.extract(_PATIENT_STUDY).fillna("")
    return dataset_from_columns(
        {
            "image": paths,
            "text": _captions(raw, columns["labels"], caption_negatives),
            **columns,
            "path": frame["Path"].astype(str).to_numpy(dtype=object),
            "patient_id": ids[0].to_numpy(dtype=object),
            "study": ids[1].to_numpy(dtype=object),
            "sex": frame["Sex"].fillna("").astype(str).to_numpy(dtype=object),
            "age": frame["Age"].to_numpy(dtype=np.float32),
            "view": frame["Frontal/Lateral"].fillna("").astype(str).to_numpy(dtype=object),
            "ap_pa": frame["AP/PA"].fillna("").astype(str).to_numpy(dtype=object),
        },
        _features(),
    )


def load_chexpert(
    root: str | os.PathLike,
    uncertain: str = "zeros",
    *,
    splits: Sequence[str] = ("train", "validation", "test"),
    frontal_only: bool = True,
    caption_negatives: bool = True,
    split_5x200: int = 0,
    seed: int = 0,
    verify: str = "exists",
    skip_bad: bool = False,
    resized: str | int | os.PathLike | None = "auto",
    cache: bool = True,
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, LoadReport]:
    """Load CheXpert as a DatasetDict (train/validation[/test]).

    Rows: ``image`` (Image), ``text`` (label caption), ``labels`` (14-way multi-hot float, uncertain handled by
    ``uncertain``: "zeros" | "ones" | "ignore" with ``label_mask`` 0), ``positive_classes`` / ``uncertain_classes``
    (class names in their features), ``path``, ``patient_id``, ``study``, ``sex``, ``age``, ``view``, ``ap_pa``.
    Blank labels are 0. Splits whose CSV is absent are left out (an error if none is present).
    ``split_5x200``: images per class (200 = the GLoRIA/MedCLIP convention; 0 = off) of a CheXpert 5x200
    zero-shot test set drawn from the training split (:func:`build_chexpert_5x200` with ``seed``), returned as
    split ``test_5x200`` with its images removed from ``train``, so that a model trained on CheXpert is not
    tested on its training images.
    ``verify``: "none" | "exists" | "header" | "decode" check of the image files (in parallel); a bad file raises
    naming it, or is skipped and counted with ``skip_bad=True``. ``cache``: reuse the table built by an earlier
    load of the same tree (see :mod:`cleft_hf.data.load_cache`). ``resized``: read the resized copy written by
    ``python -m cleft_hf.data.preprocess`` ("auto": the one in the dataset folder if present; a size; a folder;
    None: the originals; see :mod:`cleft_hf.data.resized_cache`).
    """
    check_choice("uncertain", uncertain, UNCERTAIN_POLICIES)
    check_choice("verify", verify, VERIFY_MODES)
    for split in splits:
        check_choice("CheXpert split", split, tuple(_CSV_SPLITS))
    root = require_root(root, "CheXpert")
    folder = _csv_folder(root)
    tables = [folder / _CSV_SPLITS[split] for split in splits if (folder / _CSV_SPLITS[split]).is_file()]
    if not tables:
        raise FileNotFoundError(f"none of the CheXpert tables {[_CSV_SPLITS[s] for s in splits]} found in {folder}")
    resized_dir = find_resized(root, resized)
    if split_5x200 < 0 or (split_5x200 and "train" not in splits):
        raise ValueError(
            f"split_5x200={split_5x200}: give images per class (>= 0) and include 'train' in splits "
            "(the 5x200 test set is drawn from the training split)"
        )

    def build() -> tuple[DatasetDict, LoadReport, list]:
        report = LoadReport("CheXpert")
        result = DatasetDict()
        for split in splits:
            csv_path = folder / _CSV_SPLITS[split]
            if csv_path.is_file():
                dataset = _load_split(
                    root,
                    csv_path,
                    split,
                    uncertain,
                    frontal_only,
                    caption_negatives,
                    verify,
                    skip_bad,
                    resized_dir,
                    report,
                )
                if len(dataset):
                    result[split], report.rows[split] = dataset, len(dataset)
        if split_5x200 and "train" in result:
            result["test_5x200"] = build_chexpert_5x200(result["train"], seed=seed, n_per_class=split_5x200)
            result["train"] = exclude_images(result["train"], result["test_5x200"])
            report.drop("train: images of the 5x200 test set", len(result["test_5x200"]))
            report.rows.update(train=len(result["train"]), test_5x200=len(result["test_5x200"]))
        return result, report, []

    arguments = dict(
        uncertain=uncertain,
        splits=tuple(splits),
        frontal_only=frontal_only,
        caption_negatives=caption_negatives,
        split_5x200=split_5x200,
        seed=seed,
        verify=verify,
        skip_bad=skip_bad,
        resized=str(resized_dir),
    )
    result, report = cached_load(
        "chexpert", root, arguments, tables + manifest_file(resized_dir), build, verify, cache
    )
    return finish_load(result, report, return_report)


def build_chexpert_5x200(
    dataset: Dataset, seed: int = 0, n_per_class: int = 200, exclude_other_findings: bool = True
) -> Dataset:
    """The balanced 5-class zero-shot test set (GLoRIA/CLEFT "CheXpert 5x200").

    Candidates are images positive for exactly one of Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural
    Effusion, with the other four certainly negative (not uncertain); with ``exclude_other_findings`` every other
    finding except "No Finding" must be negative too. Works on any multi-label dataset naming these classes
    (CheXpert, MIMIC-CXR). Output ``labels`` is a ClassLabel over the 5 classes; deterministic given ``seed``.
    """
    names = label_names(dataset)
    missing = [name for name in CHEXPERT_5X200_CLASSES if name not in names]
    if missing:
        raise ValueError(f"dataset labels lack the 5x200 classes {missing} (it has {names})")
    labels = column_values(dataset, "labels").astype(np.float32).reshape(len(dataset), len(names))
    uncertain = index_lists_to_mask(dataset, "uncertain_classes", len(names))
    five = [names.index(name) for name in CHEXPERT_5X200_CLASSES]
    positive = labels[:, five] == 1
    candidate = (positive.sum(axis=1) == 1) & ~uncertain[:, five].any(axis=1)
    if exclude_other_findings:
        others = [i for i, name in enumerate(names) if i not in five and name != "No Finding"]
        candidate &= ~(labels[:, others] == 1).any(axis=1) & ~uncertain[:, others].any(axis=1)
    class_index = np.where(candidate, positive.argmax(axis=1), -1)
    indices = balanced_indices(class_index, n_per_class, CHEXPERT_5X200_CLASSES, seed)
    return select_with_labels(dataset, indices, class_index[indices], CHEXPERT_5X200_CLASSES)
