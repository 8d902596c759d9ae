"""MIMIC-CXR-JPG (Johnson et al. 2019): ``files/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg``, the free-text reports
``files/pXX/pXXXXXXXX/sYYYYYYYY.txt`` (from MIMIC-CXR, often unpacked into the same root, or kept separately) and
the tables ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv`` (plain or ``.gz``).
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import os
from pathlib import Path

from datasets import DatasetDict, Features, Image, Value
import numpy as np

from ._tables import (
    UNCERTAIN_POLICIES,
    LoadReport,
    check_choice,
    check_values,
    find_table,
    finish_load,
    multilabel_columns,
    multilabel_features,
    read_table,
    require_root,
    split_dataset_dict,
)
from .chexpert import CHEXPERT_CLASSES
from .image_checks import VERIFY_MODES, map_parallel, pil_decode, pil_header, verify_images
from .load_cache import cached_load
from .reports import FALLBACK, FALLBACKS, administrative_headings, report_text
from .resized_cache import find_resized, manifest_file, use_resized

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


def _image_paths(root: Path, frame) -> np.ndarray:
    """``files/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg`` for every row, built with vectorised string operations."""
    subject = "p" + frame["subject_id"].astype(np.int64).astype(str)
    study = "s" + frame["study_id"].astype(np.int64).astype(str)
    base = str(root / "files") + os.sep
    return (
        base + subject.str[:3] + os.sep + subject + os.sep + study + os.sep + frame["dicom_id"].astype(str) + ".jpg"
    ).to_numpy(dtype=object)


def _read_report(path: str) -> str:
    """A report's text; bytes that are not UTF-8 become U+FFFD, with a warning naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        text = raw.decode("utf-8", errors="replace")
        replaced = text.count("\ufffd") - raw.decode("utf-8", "ignore").count("\ufffd")
        logger.warning(
            "report %s is not valid UTF-8 (first bad byte at offset %d): %d characters replaced by U+FFFD",
            path,
            error.start,
            replaced,
        )
        return text


def _report_texts(
    files_root: Path,
    studies,
    sections: Sequence[str],
    fallback: str,
    empty_reports: str,
    custom_rules: bool,
    report: LoadReport,
) -> tuple[dict[int, str], list[str]]:
    """study_id -> text for the studies' reports (read in parallel threads); counts sources in ``report``."""
    paths = [str(mimic_report_path(files_root, subject, study)) for subject, study in studies]
    texts: dict[int, str] = {}
    for (_, study_id), path, raw in zip(studies, paths, map_parallel(_read_report, paths, 16)):
        study = f"s{int(study_id)}"
        text, source = report_text(raw, sections, fallback, study=study if custom_rules else None)
        report.text_sources[source] = report.text_sources.get(source, 0) + 1
        if source == FALLBACK and administrative_headings(text):
            report.fallback_with_headings.append(study)
        if text:
            texts[int(study_id)] = text
        elif empty_reports == "error":
            raise ValueError(f"report without usable text ({', '.join(sections)} or fallback): {path}")
        else:
            report.no_text.append(study)
    return texts, paths


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
    custom_rules: bool = True,
    verify: str = "exists",
    skip_bad: bool = False,
    resized: str | int | os.PathLike | None = "auto",
    cache: bool = True,
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, LoadReport]:
    """Load MIMIC-CXR-JPG with report text as a DatasetDict (train/validation/test from the split table).

    Args:
        root: the MIMIC-CXR-JPG folder (holds ``files/`` and the tables).
        sections: report sections joined into ``text`` (see :mod:`cleft_hf.data.reports` for the heading and
            fallback rules, which follow the official MIMIC-CXR section parser).
        reports_root: where the report tree was unpacked, if not inside ``root``.
        tables_root: where the CSV tables are, if not in ``root``.
        views: ViewPosition values kept (frontal by default); None keeps all.
        uncertain: "zeros" | "ones" | "ignore" policy for the -1 labels of the labeler table.
        labeler: "chexpert" or "negbio" table.
        fallback: "last_section" or "none" when a report has none of ``sections``.
        empty_reports: "drop" (drop, count and log studies without usable text) or "error" (raise naming one).
        custom_rules: apply the official parser's per-study special cases of real MIMIC-CXR reports.
        verify / skip_bad: image file checks; a bad image raises naming the file, or is skipped and counted.
        resized: read the resized copy written by ``python -m cleft_hf.data.preprocess`` ("auto": the one in
            ``root`` if present; a size; a folder; None: the originals; :mod:`cleft_hf.data.resized_cache`).
        cache: reuse the table of an earlier load of the same tree (:mod:`cleft_hf.data.load_cache`).
        return_report: also return the :class:`LoadReport` (dropped rows, bad images, reports without text, and
            the number of studies per text source: "findings+impression", "impression", "fallback", "none" ...).
    Rows: ``image`` (Image), ``text``, ``labels`` (14-way multi-hot float, CheXpert class order), ``label_mask``,
    ``positive_classes`` / ``uncertain_classes``, ``subject_id``, ``study_id``, ``dicom_id``, ``view_position``.
    Studies without usable text are dropped and reported (logged, ``report.no_text``), never kept silently.
    """
    check_choice("uncertain", uncertain, UNCERTAIN_POLICIES)
    check_choice("verify", verify, VERIFY_MODES)
    check_choice("labeler", labeler, ("chexpert", "negbio"))
    check_choice("fallback", fallback, FALLBACKS)
    check_choice("empty_reports", empty_reports, ("drop", "error"))
    if isinstance(sections, str) or not sections:
        raise ValueError(f"sections must be a non-empty list of section names, got {sections!r}")
    root = require_root(root, "MIMIC-CXR-JPG")
    tables = [require_root(tables_root, "MIMIC-CXR tables")] if tables_root is not None else [root]
    reports_base = require_root(reports_root, "MIMIC-CXR reports") if reports_root is not None else None
    metadata_path = find_table(tables, f"{MIMIC_TABLE_PREFIX}-metadata.csv")
    split_path = find_table(tables, f"{MIMIC_TABLE_PREFIX}-split.csv")
    labels_path = find_table(tables, f"{MIMIC_TABLE_PREFIX}-{labeler}.csv")
    resized_dir = find_resized(root, resized)

    def build() -> tuple[DatasetDict, LoadReport, list[str]]:
        report = LoadReport("MIMIC-CXR")
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

        texts: dict[int, str] = {}
        watched: list[str] = []
        if len(frame):
            first = frame.iloc[0]
            files_root = _report_files_root(root, reports_base, first["subject_id"], first["study_id"])
            studies = list(frame[["subject_id", "study_id"]].drop_duplicates().itertuples(index=False))
            texts, watched = _report_texts(
                files_root, studies, sections, fallback, empty_reports, custom_rules, report
            )
        has_text = frame["study_id"].astype(np.int64).isin(list(texts)).to_numpy()
        report.drop("study without usable report text", int((~has_text).sum()))
        frame = frame[has_text].reset_index(drop=True)

        paths = use_resized(root, resized_dir, _image_paths(root, frame))
        keep = verify_images(paths, verify, skip_bad, report, pil_header, pil_decode)
        frame, paths = frame[keep].reset_index(drop=True), paths[keep]
        raw = frame[list(CHEXPERT_CLASSES)].to_numpy(dtype=np.float32)
        columns = {
            "image": paths,
            "text": np.asarray([texts[int(s)] for s in frame["study_id"]], dtype=object),
            **multilabel_columns(raw, uncertain),
            "subject_id": frame["subject_id"].to_numpy(dtype=np.int64),
            "study_id": frame["study_id"].to_numpy(dtype=np.int64),
            "dicom_id": frame["dicom_id"].astype(str).to_numpy(dtype=object),
            "view_position": frame["ViewPosition"].fillna("").astype(str).to_numpy(dtype=object),
        }
        result = split_dataset_dict(frame["split"].map(_SPLIT_NAMES).to_numpy(), columns, _features(), report)
        return result, report, watched

    arguments = dict(
        sections=tuple(sections),
        reports_root=reports_base,
        views=None if views is None else tuple(views),
        uncertain=uncertain,
        fallback=fallback,
        empty_reports=empty_reports,
        custom_rules=custom_rules,
        verify=verify,
        skip_bad=skip_bad,
        resized=str(resized_dir),
    )
    tables = [metadata_path, split_path, labels_path] + manifest_file(resized_dir)
    result, report = cached_load("mimic_cxr", root, arguments, tables, build, verify, cache)
    return finish_load(result, report, return_report)


def _features() -> Features:
    return Features(
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
