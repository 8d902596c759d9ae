"""MIMIC-CXR-JPG (Johnson et al. 2019): ``files/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg``, the free-text reports
``files/pXX/pXXXXXXXX/sYYYYYYYY.txt`` (from MIMIC-CXR, often unpacked into the same root, or kept separately) and
the tables ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv`` (plain or ``.gz``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import DatasetDict, Features, Image, Value

from ._tables import (
    LoadReport, check_values, find_table, multilabel_columns, multilabel_features, pil_decode, pil_header,
    read_table, require_root, split_dataset_dict, verify_images,
)
from .chexpert import CHEXPERT_CLASSES
from .reports import report_text

logger = logging.getLogger(__name__)

MIMIC_TABLE_PREFIX = "mimic-cxr-2.0.0"
_SPLIT_NAMES = {"train": "train", "validate": "validation", "validation": "validation", "test": "test"}


def mimic_image_path(root: Path, subject_id: int, study_id: int, dicom_id: str, suffix: str = ".jpg") -> Path:
    subject = f"p{int(subject_id)}"
    return root / "files" / subject[:3] / subject / f"s{int(study_id)}" / f"{dicom_id}{suffix}"


def mimic_report_path(files_root: Path, subject_id: int, study_id: int) -> Path:
    subject = f"p{int(subject_id)}"
    return files_root / subject[:3] / subject / f"s{int(study_id)}.txt"


def _report_files_root(root: Path, reports_root: Path | None, subject_id: int, study_id: int) -> Path:
    """The folder holding ``pXX/`` report folders: ``<base>/files`` or ``<base>`` for the candidate bases."""
    bases = [reports_root] if reports_root is not None else [root, root / "mimic-cxr-reports"]
    candidates = [c for base in bases for c in (base / "files", base)]
    for candidate in candidates:
        if mimic_report_path(candidate, subject_id, study_id).is_file():
            return candidate
    for candidate in candidates:  # first report missing: accept any folder that has report files at all
        if candidate.is_dir() and next(candidate.glob("p*/p*/s*.txt"), None) is not None:
            return candidate
    raise FileNotFoundError(
        f"MIMIC-CXR report files (pXX/pXXXXXXXX/sYYYYYYYY.txt) not found under {[str(c) for c in candidates]}; "
        "pass reports_root= pointing at the unpacked mimic-cxr-reports folder"
    )


def load_mimic_cxr(
    root: str | os.PathLike,
    sections: Sequence[str] = ("findings", "impression"),
    *,
    reports_root: str | os.PathLike | None = None,
    tables_root: str | os.PathLike | None = None,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertain: str = "zeros",
    labeler: str = "chexpert",
    fallback: str = "last_section",
    empty_reports: str = "drop",
    verify: str = "exists",
    skip_bad: bool = False,
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, LoadReport]:
    """Load MIMIC-CXR-JPG with report text as a DatasetDict (train/validation/test from the split table).

    Args:
        root: the MIMIC-CXR-JPG folder (holds ``files/`` and the tables).
        sections: report sections joined into ``text`` (see :mod:`cleft_hf.data.reports` for the fallback rules).
        reports_root: where the report tree was unpacked, if not inside ``root``.
        tables_root: where the CSV tables are, if not in ``root``.
        views: ViewPosition values kept (frontal by default); None keeps all.
        uncertain: "zeros" | "ones" | "ignore" policy for the -1 labels of the labeler table.
        labeler: "chexpert" or "negbio" table.
        fallback: "last_section" or "none" when a report has none of ``sections``.
        empty_reports: "drop" (drop, count and log studies without usable text) or "error" (raise naming one).
        verify / skip_bad: image file checks; a bad image raises naming the file, or is skipped and counted.
        return_report: also return the :class:`LoadReport` (counts of dropped rows, bad images, reports without text).
    Rows: ``image`` (Image), ``text``, ``labels`` (14-way multi-hot float, CheXpert class order), ``label_mask``,
    ``positive_classes`` / ``uncertain_classes``, ``subject_id``, ``study_id``, ``dicom_id``, ``view_position``.
    Studies without usable text are dropped and reported (logged, ``report.no_text``), never kept silently.
    """
    root = require_root(root, "MIMIC-CXR-JPG")
    tables = [require_root(tables_root, "MIMIC-CXR tables")] if tables_root is not None else [root]
    reports_base = require_root(reports_root, "MIMIC-CXR reports") if reports_root is not None else None
    report = LoadReport("MIMIC-CXR")

    metadata_path = find_table(tables, f"{MIMIC_TABLE_PREFIX}-metadata.csv")
    split_path = find_table(tables, f"{MIMIC_TABLE_PREFIX}-split.csv")
    labels_path = find_table(tables, f"{MIMIC_TABLE_PREFIX}-{labeler}.csv")
    metadata = read_table(metadata_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"), {"dicom_id": str})
    split = read_table(split_path, ("dicom_id", "split"), {"dicom_id": str})
    labels = read_table(labels_path, ("subject_id", "study_id") + CHEXPERT_CLASSES)
    for column in CHEXPERT_CLASSES:
        check_values(labels[column], (1, 0, -1), column, labels_path)
    check_values(split["split"], tuple(_SPLIT_NAMES), "split", split_path, allow_blank=False)

    frame = metadata.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    report.drop("no entry in the split table", int(frame["split"].isna().sum()))
    frame = frame[frame["split"].notna()]
    if views is not None:
        in_view = frame["ViewPosition"].isin(list(views))
        report.drop(f"view not in {tuple(views)}", int((~in_view).sum()))
        frame = frame[in_view]
    frame = frame.merge(labels.drop(columns=["subject_id"]), on="study_id", how="left").reset_index(drop=True)

    if empty_reports not in ("drop", "error"):
        raise ValueError(f"empty_reports must be 'drop' or 'error', got {empty_reports!r}")
    texts: dict[int, str] = {}
    if len(frame):
        first = frame.iloc[0]
        files_root = _report_files_root(root, reports_base, first["subject_id"], first["study_id"])
        for subject_id, study_id in frame[["subject_id", "study_id"]].drop_duplicates().itertuples(index=False):
            path = mimic_report_path(files_root, subject_id, study_id)
            try:
                raw_report = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                raw_report = ""
            text, source = report_text(raw_report, sections, fallback)
            report.text_sources[source] = report.text_sources.get(source, 0) + 1
            if text:
                texts[int(study_id)] = text
            elif empty_reports == "error":
                raise ValueError(f"report without usable text ({', '.join(sections)} or fallback): {path}")
            else:
                report.no_text.append(f"s{int(study_id)}")
    has_text = frame["study_id"].astype(np.int64).isin(list(texts)).to_numpy()
    report.drop("study without usable report text", int((~has_text).sum()))
    frame = frame[has_text].reset_index(drop=True)

    paths = [str(mimic_image_path(root, s, t, d)) for s, t, d in frame[["subject_id", "study_id", "dicom_id"]].itertuples(index=False)]
    keep = verify_images(paths, verify, skip_bad, report, pil_header, pil_decode)
    frame = frame[keep].reset_index(drop=True)
    paths = np.asarray(paths, dtype=object)[keep]

    features = Features(
        {
            "image": Image(),
            "text": Value("string"),
            **multilabel_features(CHEXPERT_CLASSES),
            "subject_id": Value("int64"),
            "study_id": Value("int64"),
            "dicom_id": Value("string"),
            "view_position": Value("string"),
        }
    )
    raw = frame[list(CHEXPERT_CLASSES)].to_numpy(dtype=np.float32)
    split_names = frame["split"].map(_SPLIT_NAMES).to_numpy()

    def columns_of(rows: np.ndarray) -> dict[str, list]:
        part = frame.iloc[rows]
        return {
            "image": paths[rows].tolist(),
            "text": [texts[int(s)] for s in part["study_id"]],
            **multilabel_columns(raw[rows], uncertain),
            "subject_id": part["subject_id"].astype(np.int64).tolist(),
            "study_id": part["study_id"].astype(np.int64).tolist(),
            "dicom_id": part["dicom_id"].astype(str).tolist(),
            "view_position": part["ViewPosition"].fillna("").astype(str).tolist(),
        }

    result = split_dataset_dict(split_names, columns_of, features, report)
    if not result:
        raise ValueError(f"no MIMIC-CXR images left after filtering (views={views}); see the load report")
    report.log()
    return (result, report) if return_report else result
