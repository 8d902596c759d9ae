"""Loader speed on real-size tables: a CheXpert tree with the real train.csv's 223,414 rows (synthetic labels with
CheXpert's value mix, empty image files so that `verify="exists"` does real file-system work) and a MIMIC-CXR
tree of `--mimic_studies` report files; first load (table built), second load (cached Arrow table), and the
evaluation subsets on the loaded training split.

Usage: `python benchmarks/bench_data_tables.py [--chexpert_rows 223414] [--mimic_studies 20000]`.
Goals: second load < 3 s; single_finding_set < 3 s for 200k rows.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from cleft_hf.data import (
    CHEXPERT_5X200_CLASSES,
    CHEXPERT_CLASSES,
    add_label_captions,
    build_chexpert_5x200,
    get_dataset_spec,
    load_chexpert,
    load_mimic_cxr,
    restrict_labels,
    single_finding_set,
)
from cleft_hf.demo.synthetic_cxr_cases import CXR_FINDINGS, sample_case
from cleft_hf.demo.synthetic_reports import write_report


def write_chexpert(root: Path, rows: int, seed: int = 0) -> None:
    """CheXpert-v1.0-small/train.csv + valid.csv with ``rows`` training rows (14.5 % lateral views, as the real table)."""
    rng = np.random.default_rng(seed)
    folder = root / "CheXpert-v1.0-small"
    views = np.where(rng.random(rows) < 0.145, "lateral", "frontal")  # real train.csv: 32,387 of 223,414
    relative = [f"train/patient{i // 4 + 1:05d}/study{i % 4 + 1}/view1_{v}.jpg" for i, v in enumerate(views)]  # unique
    frame = pd.DataFrame(
        {
            "Path": [f"CheXpert-v1.0-small/{r}" for r in relative],
            "Sex": "Female",
            "Age": 60,
            "Frontal/Lateral": ["Lateral" if "lateral" in r else "Frontal" for r in relative],
            "AP/PA": "AP",
        }
    )
    mix = np.array([1.0, 0.0, -1.0, np.nan])
    for name in CHEXPERT_CLASSES:
        frame[name] = rng.choice(mix, size=len(frame), p=[0.12, 0.08, 0.05, 0.75])
    (folder / "train").mkdir(parents=True)
    for r in relative:
        path = folder / r
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    frame.to_csv(folder / "train.csv", index=False)
    frame.iloc[:234].to_csv(folder / "valid.csv", index=False)


def write_mimic(root: Path, studies: int, seed: int = 0) -> None:
    """MIMIC-CXR tables and report files for ``studies`` studies (1 image each; image files empty)."""
    rng = np.random.default_rng(seed)
    metadata, split, labels = [], [], []
    for index in range(studies):
        subject, study, dicom = 10_000_000 + index // 3, 50_000_000 + index, f"{index:08x}-aaaaaaaa"
        case = sample_case(rng, CXR_FINDINGS[index % 5])
        text, study_labels = write_report(case, rng)
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
        (folder / f"s{study}" / f"{dicom}.jpg").touch()
        metadata.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": "PA"})
        split.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "split": "train"})
        labels.append({"subject_id": subject, "study_id": study, **study_labels})
    for name, rows in (("metadata", metadata), ("split", split), ("chexpert", labels)):
        pd.DataFrame(rows).to_csv(root / f"mimic-cxr-2.0.0-{name}.csv.gz", index=False)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chexpert_rows", type=int, default=223_414)
    parser.add_argument("--mimic_studies", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CLEFT_HF_LOAD_CACHE"] = str(tmp / "cache")
        _, written = timed(write_chexpert, tmp / "chexpert", args.chexpert_rows)
        print(f"# CheXpert tree with {args.chexpert_rows} rows written in {written:.0f} s")
        first, first_s = timed(load_chexpert, tmp / "chexpert")
        second, second_s = timed(load_chexpert, tmp / "chexpert")
        _, uncached_s = timed(load_chexpert, tmp / "chexpert", cache=False, verify="none")
        train = first["train"]
        per_class = 200 if args.chexpert_rows >= 100_000 else 5  # the 5x200 protocol needs a real-size table
        print(f"chexpert_csv_rows={args.chexpert_rows} chexpert_frontal_train_rows={len(train)}")
        print(f"load_chexpert_first_s={first_s:.2f}")
        print(f"load_chexpert_cached_s={second_s:.2f}")
        print(f"load_chexpert_no_cache_no_verify_s={uncached_s:.2f}")
        for name, function in (
            ("single_finding_set_s", lambda: single_finding_set(second["train"], CHEXPERT_5X200_CLASSES)),
            ("build_chexpert_5x200_s", lambda: build_chexpert_5x200(second["train"], n_per_class=per_class)),
            ("restrict_labels_s", lambda: restrict_labels(second["train"], CHEXPERT_5X200_CLASSES)),
            ("add_label_captions_s", lambda: add_label_captions(second["train"], get_dataset_spec("chexpert"))),
        ):
            result, seconds = timed(function)
            print(f"{name}={seconds:.2f}  # {len(result)} rows")
        _, split_s = timed(load_chexpert, tmp / "chexpert", split_5x200=per_class)
        print(f"load_chexpert_split_5x200_first_s={split_s:.2f}")

        _, written = timed(write_mimic, tmp / "mimic", args.mimic_studies)
        print(f"# MIMIC-CXR tree with {args.mimic_studies} reports written in {written:.0f} s")
        (data, report), first_s = timed(load_mimic_cxr, tmp / "mimic", return_report=True)
        _, second_s = timed(load_mimic_cxr, tmp / "mimic")
        print(f"load_mimic_cxr_first_s={first_s:.2f}  # {args.mimic_studies / first_s:.0f} reports/s")
        print(f"load_mimic_cxr_cached_s={second_s:.2f}")
        print(f"mimic_text_sources={dict(sorted(report.text_sources.items()))}")


if __name__ == "__main__":
    main()
