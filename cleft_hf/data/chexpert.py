"""CheXpert (Irvin et al. 2019): ``train.csv`` / ``valid.csv`` (+ optional ``test.csv``) with a ``Path`` column that
starts with the dataset folder's own name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``).

Captions follow the CLEFT reference: "this is a chest x ray of a patient with {positives}" and, with
``caption_negatives``, " but this image has no {explicitly negative findings}" (class names lower-cased).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from ..modeling.configuration_cleft import DEFAULT_PROMPT_TEMPLATE
from ._tables import (
    LoadReport,
    check_values,
    column_values,
    index_lists_to_mask,
    label_names,
    multilabel_columns,
    multilabel_features,
    pil_decode,
    pil_header,
    quiet_progress,
    read_table,
    require_root,
    verify_images,
)
from .splits import balanced_indices

logger = logging.getLogger(__name__)

CHEXPERT_CLASSES = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
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
    """Folder holding the CSVs: the root itself or its single sub-folder that has them (e.g. CheXpert-v1.0-small)."""
    if any((root / name).is_file() for name in _CSV_SPLITS.values()):
        return root
    nested = sorted(p.parent for p in root.glob("*/train.csv")) + sorted(p.parent for p in root.glob("*/valid.csv"))
    if nested:
        return nested[0]
    raise FileNotFoundError(f"CheXpert table train.csv / valid.csv not found in {root} or its sub-folders")


def resolve_prefixed_path(root: Path, relative: str) -> str:
    """Map a CSV path that starts with the dataset folder name onto ``root`` (the folder itself or its parent)."""
    full = root / relative
    if full.exists():
        return str(full)
    head, _, rest = relative.replace("\\", "/").partition("/")
    stripped = root / rest
    if rest and (stripped.exists() or root.name == head):
        return str(stripped)
    return str(full)


def load_chexpert(
    root: str | os.PathLike,
    uncertain: str = "zeros",
    *,
    splits: Sequence[str] = ("train", "validation", "test"),
    frontal_only: bool = True,
    caption_negatives: bool = True,
    verify: str = "exists",
    skip_bad: bool = False,
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, LoadReport]:
    """Load CheXpert as a DatasetDict (train/validation[/test]).

    Rows: ``image`` (Image), ``text`` (label caption), ``labels`` (14-way multi-hot float, uncertain handled by
    ``uncertain``: "zeros" | "ones" | "ignore" with ``label_mask`` 0), ``positive_classes`` / ``uncertain_classes``
    (class names in their features), ``path``, ``patient_id``, ``study``, ``sex``, ``age``, ``view``, ``ap_pa``.
    Blank labels are 0. Splits whose CSV is absent are left out (an error if none is present).
    ``verify``: "none" | "exists" | "header" | "decode" check of the image files; a bad file raises naming it, or is
    skipped and counted with ``skip_bad=True``.
    """
    root = require_root(root, "CheXpert")
    folder = _csv_folder(root)
    report = LoadReport("CheXpert")
    result = DatasetDict()
    features = Features(
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
    for split in splits:
        if split not in _CSV_SPLITS:
            raise ValueError(f"unknown CheXpert split {split!r}; choose from {tuple(_CSV_SPLITS)}")
        csv_path = folder / _CSV_SPLITS[split]
        if not csv_path.is_file():
            continue
        frame = read_table(csv_path, _META_COLUMNS + CHEXPERT_CLASSES)
        for column in CHEXPERT_CLASSES:
            check_values(frame[column], (1, 0, -1), column, csv_path)
        if frontal_only:
            frontal = frame["Frontal/Lateral"].astype(str).str.lower() == "frontal"
            report.drop(f"{split}: lateral views", int((~frontal).sum()))
            frame = frame[frontal].reset_index(drop=True)
        paths = [resolve_prefixed_path(root, str(p)) for p in frame["Path"]]
        keep = verify_images(paths, verify, skip_bad, report, pil_header, pil_decode)
        frame = frame[keep].reset_index(drop=True)
        paths = [p for p, k in zip(paths, keep) if k]

        raw = frame[list(CHEXPERT_CLASSES)].to_numpy(dtype=np.float32)
        columns = multilabel_columns(raw, uncertain)
        texts = []
        for positives, raw_row in zip(columns["positive_classes"], raw):
            negatives = [CHEXPERT_CLASSES[i] for i in np.flatnonzero(raw_row == 0) if CHEXPERT_CLASSES[i] != "No Finding"]
            texts.append(chexpert_caption([CHEXPERT_CLASSES[i] for i in positives], negatives if caption_negatives else ()))
        ids = [_PATIENT_STUDY.search(str(p).replace("\\", "/")) for p in frame["Path"]]
        result[split] = Dataset.from_dict(
            {
                "image": paths,
                "text": texts,
                **columns,
                "path": frame["Path"].astype(str).tolist(),
                "patient_id": [m.group(1) if m else "" for m in ids],
                "study": [m.group(2) if m else "" for m in ids],
                "sex": frame["Sex"].fillna("").astype(str).tolist(),
                "age": frame["Age"].astype(np.float32).tolist(),
                "view": frame["Frontal/Lateral"].fillna("").astype(str).tolist(),
                "ap_pa": frame["AP/PA"].fillna("").astype(str).tolist(),
            },
            features=features,
        )
        report.rows[split] = len(result[split])
    if not result:
        raise FileNotFoundError(f"none of the CheXpert tables {[_CSV_SPLITS[s] for s in splits]} found in {folder}")
    report.log()
    return (result, report) if return_report else result


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
    with quiet_progress():
        picked = dataset.select(indices).remove_columns(["labels", "label_mask"])
        return picked.add_column(
            "labels", class_index[indices].tolist(), feature=ClassLabel(names=list(CHEXPERT_5X200_CLASSES))
        )
