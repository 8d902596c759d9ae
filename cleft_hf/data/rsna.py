"""RSNA Pneumonia Detection Challenge: ``stage_2_train_images/<patientId>.dcm`` and ``stage_2_train_labels.csv``
(``patientId,x,y,width,height,Target``; one row per box, so several rows per positive patient).

The challenge's test labels are not public, so the splits are patient-level random splits of the labelled
training set (deterministic for a seed); :func:`build_rsna_balanced_test` draws the balanced binary test set.
"""

from __future__ import annotations

from collections.abc import Sequence
import os

from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
import numpy as np

from ._tables import (
    LoadReport,
    assign_splits,
    check_choice,
    check_split_fractions,
    check_values,
    column_values,
    find_table,
    finish_load,
    read_table,
    require_root,
    split_dataset_dict,
)
from .chexpert import chexpert_caption
from .image_checks import VERIFY_MODES, image_decode, image_header, verify_images
from .load_cache import cached_load
from .resized_cache import find_resized, manifest_file, use_resized
from .splits import build_balanced_split

RSNA_CLASSES = ("No Pneumonia", "Pneumonia")
RSNA_LABELS_TABLE = "stage_2_train_labels.csv"
RSNA_CLASS_INFO_TABLE = "stage_2_detailed_class_info.csv"
RSNA_IMAGE_FOLDER = "stage_2_train_images"


def load_rsna_pneumonia(
    root: str | os.PathLike,
    *,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    verify: str = "exists",
    skip_bad: bool = False,
    resized: str | int | os.PathLike | None = "auto",
    cache: bool = True,
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, LoadReport]:
    """Load RSNA Pneumonia as a DatasetDict (train/validation/test patient-level splits).

    Rows: ``image`` (DICOM path, decoded by the transforms with :func:`~cleft_hf.data.dicom.read_dicom`), ``text``
    (label caption), ``labels`` (ClassLabel: No Pneumonia / Pneumonia), ``patient_id``, ``boxes`` (list of
    [x, y, width, height] of the opacities), ``class_info`` (from the detailed class table when present).
    ``verify`` / ``skip_bad`` / ``resized`` / ``cache`` as for :func:`~cleft_hf.data.load_chexpert`.
    """
    check_choice("verify", verify, VERIFY_MODES)
    check_split_fractions(split_fractions)
    root = require_root(root, "RSNA Pneumonia")
    labels_path = find_table([root], RSNA_LABELS_TABLE)
    info_path = find_table([root], RSNA_CLASS_INFO_TABLE, required=False)
    image_folder = root / RSNA_IMAGE_FOLDER
    if not image_folder.is_dir():
        raise FileNotFoundError(f"RSNA image folder not found: {image_folder}")
    resized_dir = find_resized(root, resized)

    def build() -> tuple[DatasetDict, LoadReport, list]:
        return (
            *_build(labels_path, info_path, image_folder, split_fractions, seed, verify, skip_bad, resized_dir),
            [],
        )

    arguments = dict(
        split_fractions=tuple(split_fractions), seed=seed, verify=verify, skip_bad=skip_bad, resized=str(resized_dir)
    )
    tables = [labels_path] + ([info_path] if info_path is not None else []) + manifest_file(resized_dir)
    result, report = cached_load("rsna", root, arguments, tables, build, verify, cache)
    return finish_load(result, report, return_report)


def _build(
    labels_path, info_path, image_folder, split_fractions, seed, verify, skip_bad, resized_dir
) -> tuple[DatasetDict, LoadReport]:
    report = LoadReport("RSNA Pneumonia")
    frame = read_table(labels_path, ("patientId", "x", "y", "width", "height", "Target"), {"patientId": str})
    check_values(frame["Target"], (0, 1), "Target", labels_path, allow_blank=False)
    targets = frame.groupby("patientId", sort=True)["Target"].agg(["min", "max"])
    conflicting = targets.index[targets["min"] != targets["max"]].tolist()
    if conflicting:
        raise ValueError(f"column 'Target' in {labels_path} disagrees across rows of patient {conflicting[0]}")
    boxes_by_patient: dict[str, list[list[float]]] = {p: [] for p in targets.index}
    for patient, *box in frame.dropna(subset=["x", "y", "width", "height"])[
        ["patientId", "x", "y", "width", "height"]
    ].itertuples(index=False):
        boxes_by_patient[patient].append([float(v) for v in box])

    class_info: dict[str, str] = {}
    if info_path is not None:
        info = read_table(info_path, ("patientId", "class"), {"patientId": str})
        class_info = dict(zip(info["patientId"], info["class"].astype(str)))

    patients = targets.index.to_numpy()
    paths = use_resized(image_folder.parent, resized_dir, [str(image_folder / f"{p}.dcm") for p in patients])
    keep = verify_images(paths, verify, skip_bad, report, image_header, image_decode)
    patients, paths = patients[keep], np.asarray(paths, dtype=object)[keep]
    target = targets["max"].to_numpy()[keep].astype(int)
    split_of = assign_splits(patients, split_fractions, seed)

    features = Features(
        {
            "image": Value("string"),
            "text": Value("string"),
            "labels": ClassLabel(names=list(RSNA_CLASSES)),
            "patient_id": Value("string"),
            "boxes": List(List(Value("float32"), length=4)),
            "class_info": Value("string"),
        }
    )

    def columns_of(rows: np.ndarray) -> dict[str, list]:
        return {
            "image": paths[rows].tolist(),
            "text": [chexpert_caption(["pneumonia"] if target[i] else ["no pneumonia"]) for i in rows],
            "labels": target[rows].tolist(),
            "patient_id": patients[rows].tolist(),
            "boxes": [boxes_by_patient[patients[i]] for i in rows],
            "class_info": [class_info.get(patients[i], "") for i in rows],
        }

    return split_dataset_dict(split_of, columns_of, features, report), report


def build_rsna_balanced_test(dataset: Dataset, n_per_class: int | None = None, seed: int = 0) -> Dataset:
    """Balanced binary test set: ``n_per_class`` images of each class (default: as many as the rarer class has)."""
    if n_per_class is None:
        counts = np.bincount(np.asarray(column_values(dataset, "labels"), dtype=int), minlength=len(RSNA_CLASSES))
        n_per_class = int(counts.min())
    return build_balanced_split(dataset, n_per_class, seed)
