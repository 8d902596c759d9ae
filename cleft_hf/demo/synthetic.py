"""Built-in demo data written in the real on-disk formats, so the demo and the tests go through the same loaders
as a user's data: a MIMIC-CXR-JPG-like tree (``write_demo_mimic_cxr``), EMBED-like tables + DICOMs
(``write_demo_embed``), and small CheXpert / RSNA Pneumonia trees (``write_demo_chexpert``, ``write_demo_rsna``).

Everything is deterministic for a seed (identical image, report and table bytes): every study draws from its own
generator ``default_rng([seed, stream, index])`` and the gzip headers carry no timestamp.

MIMIC-CXR test split: ``n_test_per_class`` studies of each CheXpert-5x200 class that are positive for exactly that
finding (no other finding, device or hedged finding) go to ``test`` in ``mimic-cxr-2.0.0-split.csv``, so
``build_chexpert_5x200(load_mimic_cxr(root)["test"], n_per_class=n_test_per_class)`` gives the demo's balanced
5-class zero-shot set. Validation and training studies mix normal (20 %), single-finding (65 %) and multi-finding
(15 %) cases, with support devices and hedged ("possible ...") findings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..data.chexpert import CHEXPERT_CLASSES
from ..data.embed import EMBED_CLINICAL_TABLE, EMBED_LEGEND_TABLE, EMBED_METADATA_TABLE
from ..data.mimic_cxr import MIMIC_TABLE_PREFIX, mimic_image_path, mimic_report_path
from ..data.rsna import RSNA_CLASS_INFO_TABLE, RSNA_IMAGE_FOLDER, RSNA_LABELS_TABLE
from .dicom_writer import write_dicom
from .synthetic_cxr import ChestXRayRenderer
from .synthetic_cxr_cases import CXR_FINDINGS, sample_case
from .synthetic_mammo import SYNTHETIC_LEGEND, render_mammogram, sample_findings
from .synthetic_reports import write_report

KIND_WEIGHTS = {"normal": 0.20, "multi": 0.15, **dict.fromkeys(CXR_FINDINGS, 0.13)}
_VIEW_MEANINGS = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}


def _kinds(rng: np.random.Generator, count: int) -> list[str]:
    names = list(KIND_WEIGHTS)
    return [str(k) for k in rng.choice(names, size=count, p=np.array(list(KIND_WEIGHTS.values())))]


def _unique_ints(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    values: list[int] = []
    seen: set[int] = set()
    while len(values) < count:
        for value in rng.integers(low, high, size=2 * (count - len(values)) + 8).tolist():
            if value not in seen and len(values) < count:
                seen.add(value)
                values.append(value)
    return values


def _hex_id(rng: np.random.Generator, groups: int = 5, width: int = 8) -> str:
    return "-".join(f"{int(v):0{width}x}" for v in rng.integers(0, 16**width, size=groups))


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV, gzipped without a timestamp when the name ends in .gz (byte-identical reruns)."""
    compression = {"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None
    frame.to_csv(path, index=False, compression=compression)


def _save_jpeg(pixels: np.ndarray, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=quality)


def write_demo_mimic_cxr(
    root: str | os.PathLike,
    n_studies: int = 1000,
    *,
    image_size: int = 128,
    seed: int = 0,
    n_test_per_class: int | None = None,
    validation_fraction: float = 0.05,
    lateral_fraction: float = 0.1,
    device_rate: float = 0.08,
    uncertain_rate: float = 0.05,
    empty_report_rate: float = 0.002,
    class_name_rate: float = 0.6,
    negation_rate: float = 0.3,
    jpeg_quality: int = 90,
) -> dict:
    """Write a MIMIC-CXR-JPG-like tree: ``files/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg``, reports
    ``files/.../sYYYYYYYY.txt`` and ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz`` (real column names).

    ``n_test_per_class`` (default ``max(1, n_studies // 50)``) single-finding studies per 5x200 class form the test
    split. Returns a summary: studies, images, studies per split, test studies per class.
    """
    root = Path(root)
    n_test_per_class = max(1, n_studies // 50) if n_test_per_class is None else n_test_per_class
    n_test = n_test_per_class * len(CXR_FINDINGS)
    n_validation = int(round(n_studies * validation_fraction))
    n_train = n_studies - n_test - n_validation
    if n_train < 0:
        raise ValueError(f"n_studies={n_studies} is too small for {n_test} test and {n_validation} validation studies")
    rng = np.random.default_rng([seed, 0])
    plan = (
        [("test", k) for k in CXR_FINDINGS for _ in range(n_test_per_class)]
        + [("validate", k) for k in _kinds(rng, n_validation)]
        + [("train", k) for k in _kinds(rng, n_train)]
    )
    order = rng.permutation(len(plan))
    study_ids = _unique_ints(rng, n_studies, 50_000_000, 60_000_000)
    subject_ids = iter(_unique_ints(rng, n_studies, 10_000_000, 20_000_000))
    renderer = ChestXRayRenderer(image_size)
    metadata, splits, labels = [], [], []
    subject, remaining = 0, 0
    for position, index in enumerate(order):
        split, kind = plan[index]
        if split != "train" or remaining == 0:  # train subjects have 1-3 studies; others one
            subject, remaining = next(subject_ids), int(rng.integers(1, 4)) if split == "train" else 1
        remaining -= 1
        study_id = study_ids[position]
        study_rng = np.random.default_rng([seed, 1, position])
        clean = split == "test"
        case = sample_case(study_rng, kind, 0.0 if clean else device_rate, 0.0 if clean else uncertain_rate)
        frontal = "AP" if study_rng.random() < 0.3 else "PA"
        layout = "empty" if not clean and study_rng.random() < empty_report_rate else None
        report, study_labels = write_report(
            case, study_rng, view=frontal, class_name_rate=class_name_rate, negation_rate=negation_rate, layout=layout
        )
        study_folder = mimic_image_path(root, subject, study_id, "x").parent
        study_folder.mkdir(parents=True, exist_ok=True)  # also creates the subject folder holding the report
        mimic_report_path(root / "files", subject, study_id).write_text(report, encoding="utf-8")
        labels.append(
            {"subject_id": subject, "study_id": study_id, **{k: study_labels[k] for k in sorted(CHEXPERT_CLASSES)}}
        )
        views = [frontal] + (["LATERAL"] if study_rng.random() < lateral_fraction else [])
        for view in views:
            dicom_id = _hex_id(study_rng)
            pixels = renderer.render(case, study_rng, view=view)
            Image.fromarray(pixels).save(study_folder / f"{dicom_id}.jpg", quality=jpeg_quality)
            description = "CHEST (PORTABLE AP)" if frontal == "AP" else "CHEST (PA AND LAT)"
            metadata.append(
                {
                    "dicom_id": dicom_id,
                    "subject_id": subject,
                    "study_id": study_id,
                    "PerformedProcedureStepDescription": description,
                    "ViewPosition": view,
                    "Rows": image_size,
                    "Columns": image_size,
                    "StudyDate": 21800101 + int(study_rng.integers(0, 9000)),
                    "StudyTime": round(float(study_rng.uniform(0, 235959)), 3),
                    "ProcedureCodeSequence_CodeMeaning": description,
                    "ViewCodeSequence_CodeMeaning": _VIEW_MEANINGS[view],
                    "PatientOrientationCodeSequence_CodeMeaning": "Erect",
                }
            )
            splits.append({"dicom_id": dicom_id, "study_id": study_id, "subject_id": subject, "split": split})
    _write_csv(pd.DataFrame(metadata), root / f"{MIMIC_TABLE_PREFIX}-metadata.csv.gz")
    _write_csv(pd.DataFrame(splits), root / f"{MIMIC_TABLE_PREFIX}-split.csv.gz")
    _write_csv(pd.DataFrame(labels), root / f"{MIMIC_TABLE_PREFIX}-chexpert.csv.gz")
    counts = {name: sum(1 for s, _ in plan if s == name) for name in ("train", "validate", "test")}
    return {
        "root": str(root),
        "studies": n_studies,
        "images": len(metadata),
        "splits": counts,
        "test_per_class": n_test_per_class,
    }


def write_demo_chexpert(
    root: str | os.PathLike,
    n_images: int = 60,
    *,
    image_size: int = 64,
    seed: int = 0,
    folder: str = "CheXpert-v1.0-small",
    valid_fraction: float = 0.2,
    lateral_fraction: float = 0.15,
    uncertain_rate: float = 0.3,
) -> dict:
    """Write a CheXpert-like tree ``<folder>/{train,valid}.csv`` + ``<folder>/{train,valid}/patientNNNNN/study1/*.jpg``
    whose ``Path`` column starts with ``folder`` like the official CSVs (1 / 0 / -1 / blank labels)."""
    root, rng = Path(root), np.random.default_rng([seed, 2])
    renderer = ChestXRayRenderer(image_size)
    rows: dict[str, list[dict]] = {"train": [], "valid": []}
    patient = 0
    for index, kind in enumerate(_kinds(rng, n_images)):
        image_rng = np.random.default_rng([seed, 3, index])
        split = "valid" if image_rng.random() < valid_fraction else "train"
        case = sample_case(image_rng, kind, device_rate=0.1, uncertain_rate=uncertain_rate)
        _, study_labels = write_report(case, image_rng)
        lateral = image_rng.random() < lateral_fraction
        if not lateral or patient == 0:
            patient += 1
        name = "view2_lateral.jpg" if lateral else "view1_frontal.jpg"
        relative = f"{folder}/{split}/patient{patient:05d}/study1/{name}"
        _save_jpeg(renderer.render(case, image_rng, view="LATERAL" if lateral else "PA"), root / relative, 90)
        rows[split].append(
            {
                "Path": relative,
                "Sex": str(image_rng.choice(["Female", "Male"])),
                "Age": int(image_rng.integers(20, 90)),
                "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                "AP/PA": "" if lateral else str(image_rng.choice(["AP", "PA"])),
                **study_labels,
            }
        )
    for split, split_rows in rows.items():
        columns = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]
        _write_csv(pd.DataFrame(split_rows, columns=columns), root / folder / f"{split}.csv")
    return {"root": str(root), "images": n_images, "splits": {k: len(v) for k, v in rows.items()}}


def write_demo_rsna(
    root: str | os.PathLike,
    n_images: int = 40,
    *,
    image_size: int = 64,
    seed: int = 0,
    positive_fraction: float = 0.35,
) -> dict:
    """Write an RSNA-Pneumonia-like tree: ``stage_2_train_images/<patientId>.dcm`` (8-bit MONOCHROME2),
    ``stage_2_train_labels.csv`` (one row per box, a blank row for negatives) and the detailed class table."""
    root = Path(root)
    (root / RSNA_IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    renderer = ChestXRayRenderer(image_size)
    labels, classes = [], []
    for index in range(n_images):
        image_rng = np.random.default_rng([seed, 5, index])
        patient = (
            _hex_id(image_rng, groups=1)
            + "-"
            + _hex_id(image_rng, groups=3, width=4)
            + "-"
            + _hex_id(image_rng, 1, 12)
        )
        positive = image_rng.random() < positive_fraction
        case = sample_case(
            image_rng,
            "Consolidation" if positive else str(image_rng.choice(["normal", "Cardiomegaly", "Atelectasis"])),
        )
        pixels = renderer.render(case, image_rng)
        uid = f"1.2.826.0.1.3680043.8.498.{int(image_rng.integers(10**15, 10**16))}"
        write_dicom(
            root / RSNA_IMAGE_FOLDER / f"{patient}.dcm",
            pixels,
            modality="CR",
            SOPInstanceUID=uid,
            PatientID=patient,
            ViewPosition="PA",
        )
        if positive:
            side = case.findings["Consolidation"]["side"]
            x0 = (0.12 if side == "right" else 0.55) * image_size
            box = [round(x0, 1), round(0.25 * image_size, 1), round(0.33 * image_size, 1), round(0.45 * image_size, 1)]
            labels.append(
                {"patientId": patient, "x": box[0], "y": box[1], "width": box[2], "height": box[3], "Target": 1}
            )
            classes.append({"patientId": patient, "class": "Lung Opacity"})
        else:
            labels.append({"patientId": patient, "x": None, "y": None, "width": None, "height": None, "Target": 0})
            classes.append(
                {"patientId": patient, "class": "Normal" if not case.findings else "No Lung Opacity / Not Normal"}
            )
    _write_csv(pd.DataFrame(labels), root / RSNA_LABELS_TABLE)
    _write_csv(pd.DataFrame(classes), root / RSNA_CLASS_INFO_TABLE)
    return {"root": str(root), "images": n_images, "positives": sum(row["Target"] for row in labels)}


def write_demo_embed(
    root: str | os.PathLike,
    n_images: int = 200,
    *,
    image_size: int = 128,
    seed: int = 0,
    source_prefix: str = "/mnt/NAS2/mammo/anon_dicom",
    cview_fraction: float = 0.05,
    birads_weights: dict[str, float] | None = None,
) -> dict:
    """Write EMBED-like data: ``tables/EMBED_OpenData_{metadata,clinical}.csv`` + the legend, and DICOMs under
    ``images/cohort_1/<empi>/<study>/<sop>.dcm`` whose ``anon_dicom_path`` is the absolute source path under
    ``source_prefix``. Exams have 4 views (L/R x CC/MLO); one clinical row per side (some sides two). DICOMs vary:
    12-bit MONOCHROME2 with a window, 12-bit MONOCHROME1 (inverted storage), 16-bit without VOI. Whole exams are
    written, so the image count is ``n_images`` rounded up to the exam's views."""
    root, rng = Path(root), np.random.default_rng([seed, 6])
    weights = birads_weights or {"A": 0.15, "N": 0.3, "B": 0.15, "P": 0.1, "S": 0.1, "M": 0.1, "K": 0.1}
    letters, probabilities = list(weights), np.array(list(weights.values()), dtype=float)
    height, width = image_size, int(round(image_size * 0.8))
    metadata, clinical, images, exam = [], [], 0, 0
    empis = _unique_ints(rng, n_images, 10_000_000, 99_999_999)
    while images < n_images:
        exam_rng = np.random.default_rng([seed, 7, exam])
        empi, acc = str(empis[exam // 2]), str(int(exam_rng.integers(10**15, 10**16)))
        male = exam_rng.random() < 0.02
        density = 5 if male else int(exam_rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.35, 0.15]))
        screening = exam_rng.random() < 0.7
        description = "MG Screening Bilateral" if screening else "MG Diagnostic Mammo Bilateral"
        age = int(exam_rng.integers(40, 85))
        study_uid = f"1.2.826.0.1.3680043.8.498.{int(exam_rng.integers(10**11, 10**12))}"
        for side in ("L", "R"):
            letter = str(exam_rng.choice(letters, p=probabilities / probabilities.sum()))
            codes = sample_findings(letter, exam_rng)
            for extra in range(2 if exam_rng.random() < 0.1 else 1):
                clinical.append(
                    {
                        "empi_anon": empi,
                        "acc_anon": acc,
                        "desc": description,
                        "side": side,
                        "asses": letter if extra == 0 else "B",
                        "tissueden": density,
                        "numfind": 1 + extra,
                        "massshape": codes.get("massshape"),
                        "massmargin": codes.get("massmargin"),
                        "massdens": codes.get("massdens"),
                        "calcfind": codes.get("calcfind"),
                        "calcdistri": codes.get("calcdistri"),
                        "age_at_study": age,
                        "ETHNIC_GROUP_DESC": "Non-Hispanic or Latino",
                        "RACE_DESC": str(exam_rng.choice(["White", "African American  or Black", "Asian"])),
                    }
                )
            for view in ("CC", "MLO"):
                for image_type in ("2D", "cview") if exam_rng.random() < cview_fraction else ("2D",):
                    image = render_mammogram(
                        exam_rng,
                        min(density, 4),
                        letter,
                        codes,
                        laterality=side,
                        view=view,
                        height=height,
                        width=width,
                    )
                    sop_uid = f"{study_uid}.{images + 1}"
                    relative = f"cohort_1/{empi}/{study_uid}/{sop_uid}.dcm"
                    variant = images % 4
                    if variant == 3:  # 16-bit, no VOI tags: min-max scaled on reading
                        stored, kwargs = (image * 65535).astype(np.uint16), {"bits_stored": 16}
                    elif variant == 2:  # MONOCHROME1: dense stored dark
                        stored = ((1.0 - image) * 4095).astype(np.uint16)
                        kwargs = {"bits_stored": 12, "photometric": "MONOCHROME1", "window": (2047.5, 4096)}
                    else:
                        stored, kwargs = (
                            (image * 4095).astype(np.uint16),
                            {"bits_stored": 12, "window": (2047.5, 4096)},
                        )
                    path = root / "images" / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_dicom(
                        path,
                        stored,
                        modality="MG",
                        SOPInstanceUID=sop_uid,
                        ImageLaterality=side,
                        ViewPosition=view,
                        **kwargs,
                    )
                    metadata.append(
                        {
                            "anon_dicom_path": f"{source_prefix.rstrip('/')}/{relative}",
                            "empi_anon": empi,
                            "acc_anon": acc,
                            "study_date_anon": f"2015-{1 + exam % 12:02d}-15",
                            "StudyDescription": description,
                            "SeriesDescription": f"{side} {view}",
                            "FinalImageType": image_type,
                            "ImageLateralityFinal": side,
                            "ViewPosition": view,
                            "spot_mag": None,
                            "Rows": height,
                            "Columns": width,
                        }
                    )
                    images += 1
        exam += 1
    tables = root / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    _write_csv(pd.DataFrame(metadata), tables / EMBED_METADATA_TABLE)
    _write_csv(pd.DataFrame(clinical), tables / EMBED_CLINICAL_TABLE)
    legend = [
        {"Header in export": header, "Code": code, "Meaning": meaning}
        for header, table in SYNTHETIC_LEGEND.items()
        for code, meaning in table.items()
    ]
    _write_csv(pd.DataFrame(legend), tables / EMBED_LEGEND_TABLE)
    return {"root": str(root), "images": images, "exams": exam, "source_prefix": source_prefix}


__all__ = ["write_demo_mimic_cxr", "write_demo_chexpert", "write_demo_rsna", "write_demo_embed", "KIND_WEIGHTS"]
