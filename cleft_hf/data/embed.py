"""EMBED (Emory Breast Imaging Dataset): DICOMs plus ``EMBED_OpenData_metadata.csv`` (one row per image, with the
source institution's absolute ``anon_dicom_path``) and ``EMBED_OpenData_clinical.csv`` (one row per finding),
joined on ``acc_anon``; code meanings from ``AWS_Open_Data_Clinical_Legend.csv`` when present.

Clinical row per image: the first row whose ``side`` equals the image laterality, else a bilateral ("B") row, else
the exam's first row (the CLEFT reference's choice). Captions are assembled from the metadata: procedure
(screening/diagnostic), side, view, breast composition, findings (mass shape/density, calcifications) and the
BI-RADS impression. EMBED has no official split: patient-level random splits unless the metadata has ``split``.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import os
from pathlib import Path, PurePosixPath

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
import numpy as np
import pandas as pd

from ._tables import (
    LoadReport,
    assign_splits,
    check_choice,
    check_split_fractions,
    check_values,
    find_table,
    finish_load,
    read_table,
    require_root,
    split_dataset_dict,
)
from .image_checks import VERIFY_MODES, image_decode, image_header, verify_images
from .resized_cache import find_resized, use_resized
from .splits import build_balanced_split

logger = logging.getLogger(__name__)

EMBED_METADATA_TABLE = "EMBED_OpenData_metadata.csv"
EMBED_CLINICAL_TABLE = "EMBED_OpenData_clinical.csv"
EMBED_LEGEND_TABLE = "AWS_Open_Data_Clinical_Legend.csv"
BIRADS_LETTERS = ("A", "N", "B", "P", "S", "M", "K")  # BI-RADS 0..6
EMBED_BIRADS_CLASSES = (
    "additional imaging required",
    "negative",
    "benign finding",
    "probably benign finding",
    "suspicious abnormality",
    "highly suggestive of malignancy",
    "known biopsy-proven malignancy",
)
EMBED_DENSITY_CLASSES = (
    "almost entirely fat",
    "scattered fibroglandular densities",
    "heterogeneously dense",
    "extremely dense",
)
_FINDING_SENTENCES = (
    "additional imaging is recommended.",
    "no significant masses, calcification, or other abnormalities are present.",
    "a benign finding is present.",
    "a probably benign finding is present.",
    "a suspicious abnormality is present.",
    "a finding highly suggestive of malignancy is present, a biopsy is recommended.",
    "a known biopsy-proven malignant mass is present.",
)
# The CLEFT paper's zero-shot prompt (class text: "birads score 1: negative.", "breast tissue density 2: ...").
EMBED_PROMPT_TEMPLATE = "this is a breast 2d full-field digital mammogram of a patient with {}"
_SIDES = {"L": "left", "R": "right", "B": "bilateral"}
_METADATA_COLUMNS = (
    "anon_dicom_path",
    "empi_anon",
    "acc_anon",
    "ImageLateralityFinal",
    "ViewPosition",
    "FinalImageType",
)
_CLINICAL_COLUMNS = ("acc_anon", "side", "asses", "tissueden")


def map_source_paths(sources: Sequence[str], root: Path, prefix: str | None = None, probe_rows: int = 50) -> list[str]:
    """Map the source institution's absolute paths onto ``root``.

    With ``prefix`` (e.g. "/mnt/NAS2/mammo/anon_dicom") it is replaced by ``root``. Otherwise the number of leading
    components to drop is inferred from the first rows (the longest path suffix that exists under ``root``); a row
    whose mapped file is missing is searched by the same longest-suffix rule on its own.
    """
    parts = [PurePosixPath(str(s).replace("\\", "/")).parts for s in sources]
    parts = [p[1:] if p and p[0] == "/" else p for p in parts]

    def longest_suffix(row_parts: tuple[str, ...]) -> int | None:
        for start in range(len(row_parts)):
            if root.joinpath(*row_parts[start:]).is_file():
                return start
        return None

    if prefix is not None:
        prefix_parts = PurePosixPath(prefix.replace("\\", "/").rstrip("/")).parts
        prefix_parts = prefix_parts[1:] if prefix_parts and prefix_parts[0] == "/" else prefix_parts
        drops = [len(prefix_parts) if p[: len(prefix_parts)] == prefix_parts else None for p in parts]
    else:
        found = next((s for s in map(longest_suffix, parts[:probe_rows]) if s is not None), None)
        if found is None and parts:
            raise FileNotFoundError(
                f"no file of anon_dicom_path (e.g. {sources[0]}) exists under {root} for any path suffix; "
                "pass path_prefix= with the source folder to replace"
            )
        drops = [found] * len(parts)
    mapped = []
    for row_parts, drop in zip(parts, drops):
        candidate = root.joinpath(*row_parts[drop:]) if drop is not None else None
        if candidate is None or not candidate.is_file():
            start = longest_suffix(row_parts)
            candidate = (
                root.joinpath(*row_parts[start:]) if start is not None else (candidate or root.joinpath(*row_parts))
            )
        mapped.append(str(candidate))
    return mapped


def _legend(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None:
        logger.info("EMBED legend table not found: captions leave out mass and calcification descriptors")
        return {}
    table = read_table(path, ("Header in export", "Code", "Meaning"))
    legend: dict[str, dict[str, str]] = {}
    for header, code, meaning in table[["Header in export", "Code", "Meaning"]].itertuples(index=False):
        legend.setdefault(str(header), {})[str(code)] = str(meaning).lower()
    return legend


def _code(legend: dict, header: str, value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    key = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return legend.get(header, {}).get(key)


def embed_caption(row: dict, legend: dict) -> str:
    """Caption from one joined metadata+clinical row (keys as in the EMBED tables)."""
    description = str(row.get("StudyDescription") or row.get("desc") or "").lower()
    procedure = "screening " if "screen" in description else "diagnostic " if "diag" in description else ""
    parts = [f"This is a breast 2D full-field digital {procedure}mammogram of a patient."]
    side, view = _SIDES.get(str(row.get("ImageLateralityFinal"))), row.get("ViewPosition")
    if side and isinstance(view, str) and view:
        parts.append(f"This mammogram is for the {side} breast with {view} view.")
    density = row.get("tissueden")
    if density in (1, 2, 3, 4):
        parts.append(f"The breast is {EMBED_DENSITY_CLASSES[int(density) - 1]}.")
        if density >= 3:
            parts.append("This may lower the sensitivity of mammography.")
    letter = row.get("asses")
    if letter in BIRADS_LETTERS:
        k = BIRADS_LETTERS.index(letter)
        parts.append(f"The mammogram shows that {_FINDING_SENTENCES[k]}")
        shape, mass_density = (
            _code(legend, "massshape", row.get("massshape")),
            _code(legend, "massdens", row.get("massdens")),
        )
        if shape and mass_density:
            parts.append(f"The mass is {shape} and {mass_density}.")
        calc, distribution = (
            _code(legend, "calcfind", row.get("calcfind")),
            _code(legend, "calcdistri", row.get("calcdistri")),
        )
        if calc and distribution:
            parts.append(f"A {distribution} {calc} calcification is present.")
        parts.append(f"BI-RADS Category {k}: {EMBED_BIRADS_CLASSES[k]}.")
    return " ".join(parts)


def _join_clinical(metadata: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
    """One clinical row per image (same side, else bilateral, else the exam's first row); NaN when none."""
    meta = metadata.reset_index(drop=True).assign(_image=lambda f: np.arange(len(f)))
    clin = clinical.reset_index(drop=True).assign(_order=lambda f: np.arange(len(f)))
    clin = clin.drop(columns=[c for c in clin.columns if c in meta.columns and c != "acc_anon"])
    joined = meta.merge(clin, on="acc_anon", how="left")
    same = joined["side"] == joined["ImageLateralityFinal"]
    joined["_priority"] = np.where(same, 0, np.where(joined["side"] == "B", 1, 2))
    joined = joined.sort_values(["_image", "_priority", "_order"], kind="stable")
    return joined.drop_duplicates("_image").drop(columns=["_image", "_priority", "_order"]).reset_index(drop=True)


def load_embed(
    root: str | os.PathLike,
    task: str = "birads",
    *,
    path_prefix: str | None = None,
    images_root: str | os.PathLike | None = None,
    image_types: Sequence[str] | None = ("2D",),
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    verify: str = "exists",
    skip_bad: bool = False,
    resized: str | int | os.PathLike | None = "auto",
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, LoadReport]:
    """Load EMBED for ``task`` "birads" (7 classes, BI-RADS 0-6) or "density" (4 classes, tissue density 1-4).

    Tables are looked for in ``root`` and ``root/tables`` (plain or .gz). Images live under ``images_root``
    (default ``root/images`` if it exists, else ``root``); ``path_prefix``: the source folder of ``anon_dicom_path``
    to replace by the images folder (inferred when None: the longest path suffix that exists there). Rows lacking the task's label are dropped and
    counted (density 5, the male category, too); values outside the allowed codes raise.
    Rows: ``image`` (DICOM path), ``text`` (caption), ``labels`` (ClassLabel), ``birads`` (0-6, -1 unknown),
    ``density`` (1-4, -1 unknown), ``patient_id``, ``acc_anon``, ``laterality``, ``view``, ``image_type``,
    ``source_path``. ``resized``: read the 16-bit PNGs written by ``python -m cleft_hf.data.preprocess`` ("auto":
    the copy in ``root`` if present; a size; a folder; None: the DICOMs; :mod:`cleft_hf.data.resized_cache`).
    """
    check_choice("task", task, ("birads", "density"))
    check_choice("verify", verify, VERIFY_MODES)
    check_split_fractions(split_fractions)
    root = require_root(root, "EMBED")
    folders = [root, root / "tables"]
    report = LoadReport(f"EMBED ({task})")
    metadata_path = find_table(folders, EMBED_METADATA_TABLE)
    clinical_path = find_table(folders, EMBED_CLINICAL_TABLE)
    metadata = read_table(
        metadata_path, _METADATA_COLUMNS, {"anon_dicom_path": str, "acc_anon": str, "empi_anon": str}
    )
    clinical = read_table(clinical_path, _CLINICAL_COLUMNS, {"acc_anon": str})
    check_values(clinical["asses"], BIRADS_LETTERS, "asses", clinical_path)
    check_values(clinical["tissueden"], (1, 2, 3, 4, 5), "tissueden", clinical_path)
    legend = _legend(find_table(folders, EMBED_LEGEND_TABLE, required=False))

    if image_types is not None:
        wanted = metadata["FinalImageType"].isin(list(image_types))
        report.drop(f"image type not in {tuple(image_types)}", int((~wanted).sum()))
        metadata = metadata[wanted]
    frame = _join_clinical(metadata, clinical)
    if task == "birads":
        has_label = frame["asses"].isin(BIRADS_LETTERS)
        report.drop("no BI-RADS assessment", int((~has_label).sum()))
    else:
        has_label = frame["tissueden"].isin([1, 2, 3, 4])
        report.drop("density 5 (male)", int((frame["tissueden"] == 5).sum()))
        report.drop("no tissue density", int(frame["tissueden"].isna().sum()))
    frame = frame[has_label].reset_index(drop=True)

    if images_root is not None:
        image_folder = require_root(images_root, "EMBED images")
    else:
        image_folder = root / "images" if (root / "images").is_dir() else root
    paths = map_source_paths(frame["anon_dicom_path"].tolist(), image_folder, path_prefix)
    paths = use_resized(root, find_resized(root, resized), paths)  # the 16-bit PNGs of cleft_hf.data.preprocess
    keep = verify_images(paths, verify, skip_bad, report, image_header, image_decode)
    frame = frame[keep].reset_index(drop=True)
    paths = np.asarray(paths, dtype=object)[keep]

    birads = frame["asses"].map(lambda a: BIRADS_LETTERS.index(a) if a in BIRADS_LETTERS else -1).to_numpy(int)
    density = frame["tissueden"].fillna(-1).astype(int).to_numpy()
    labels = birads if task == "birads" else density - 1
    if "split" in frame.columns:
        split_of = (
            frame["split"].astype(str).str.lower().replace({"valid": "validation", "val": "validation"}).to_numpy()
        )
    else:
        split_of = assign_splits(frame["empi_anon"].astype(str).tolist(), split_fractions, seed)
    classes = EMBED_BIRADS_CLASSES if task == "birads" else EMBED_DENSITY_CLASSES
    features = Features(
        {
            "image": Value("string"),
            "text": Value("string"),
            "labels": ClassLabel(names=list(classes)),
            "birads": Value("int8"),
            "density": Value("int8"),
            "patient_id": Value("string"),
            "acc_anon": Value("string"),
            "laterality": Value("string"),
            "view": Value("string"),
            "image_type": Value("string"),
            "source_path": Value("string"),
        }
    )
    records = frame.to_dict("records")

    def columns_of(rows: np.ndarray) -> dict[str, list]:
        part = frame.iloc[rows]
        return {
            "image": paths[rows].tolist(),
            "text": [embed_caption(records[i], legend) for i in rows],
            "labels": labels[rows].tolist(),
            "birads": birads[rows].tolist(),
            "density": density[rows].tolist(),
            "patient_id": part["empi_anon"].astype(str).tolist(),
            "acc_anon": part["acc_anon"].astype(str).tolist(),
            "laterality": part["ImageLateralityFinal"].fillna("").astype(str).tolist(),
            "view": part["ViewPosition"].fillna("").astype(str).tolist(),
            "image_type": part["FinalImageType"].fillna("").astype(str).tolist(),
            "source_path": part["anon_dicom_path"].astype(str).tolist(),
        }

    return finish_load(split_dataset_dict(split_of, columns_of, features, report), report, return_report)


def build_embed_birads_7x200(dataset: Dataset, n_per_class: int = 200, seed: int = 0) -> Dataset:
    """Balanced BI-RADS test set: ``n_per_class`` images of each of the 7 BI-RADS classes."""
    _check_task(dataset, EMBED_BIRADS_CLASSES, "birads")
    return build_balanced_split(dataset, n_per_class, seed)


def build_embed_density_4x500(dataset: Dataset, n_per_class: int = 500, seed: int = 0) -> Dataset:
    """Balanced density test set: ``n_per_class`` images of each of the 4 density classes."""
    _check_task(dataset, EMBED_DENSITY_CLASSES, "density")
    return build_balanced_split(dataset, n_per_class, seed)


def _check_task(dataset: Dataset, classes: Sequence[str], task: str) -> None:
    feature = dataset.features.get("labels")
    if not isinstance(feature, ClassLabel) or tuple(feature.names) != tuple(classes):
        raise ValueError(
            f"dataset labels are not the EMBED {task} classes (load it with load_embed(..., task={task!r}))"
        )
