"""Dataset loaders on tiny fixture trees in the real formats: columns, joins, policies, sections, builders, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path
import shutil

from datasets import ClassLabel, Dataset, Features, Value, concatenate_datasets
import numpy as np
import pandas as pd
from PIL import Image
import pytest

from cleft_hf.data import (
    CHEXPERT_5X200_CLASSES,
    CHEXPERT_CLASSES,
    EMBED_BIRADS_CLASSES,
    build_chexpert_5x200,
    build_embed_birads_7x200,
    build_embed_density_4x500,
    build_rsna_balanced_test,
    label_names,
    load_chexpert,
    load_embed,
    load_mimic_cxr,
    load_rsna_pneumonia,
    read_dicom,
    report_text,
)
from cleft_hf.data._tables import dataset_from_columns, multilabel_columns, multilabel_features
from cleft_hf.demo.synthetic import write_demo_embed, write_demo_mimic_cxr, write_demo_rsna

TABLES = ("metadata", "split", "chexpert")


@pytest.fixture(scope="module")
def mimic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic")
    write_demo_mimic_cxr(root, 60, image_size=32, seed=1, n_test_per_class=3, empty_report_rate=0.0)
    return root


@pytest.fixture
def mimic_copy(tmp_path, mimic_root):
    return Path(shutil.copytree(mimic_root, tmp_path / "mimic"))


def _table(root: Path, name: str) -> Path:
    return root / f"mimic-cxr-2.0.0-{name}.csv.gz"


# ------------------------------------------------------------------------------------------------ MIMIC-CXR
def test_mimic_splits_views_text_and_labels(mimic_root):
    data = load_mimic_cxr(mimic_root)
    assert set(data) == {"train", "validation", "test"} and len(data["test"]) == 15
    for split in data.values():
        assert set(split["view_position"]) <= {"PA", "AP"}
        assert all(text.strip() for text in split["text"])
    assert label_names(data["train"]) == list(CHEXPERT_CLASSES)
    row = data["test"][0]
    report = (
        mimic_root / "files" / f"p{str(row['subject_id'])[:2]}" / f"p{row['subject_id']}" / f"s{row['study_id']}.txt"
    ).read_text()
    assert row["text"] == report_text(report)[0]
    assert row["image"].size == (32, 32)
    five = build_chexpert_5x200(data["test"], n_per_class=3)
    assert np.bincount(five["labels"], minlength=5).tolist() == [3] * 5


def test_mimic_plain_tables_and_separate_report_tree(tmp_path, mimic_copy, mimic_root):
    for name in TABLES:
        gz = _table(mimic_copy, name)
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    reports = tmp_path / "reports"
    for report in (mimic_copy / "files").glob("p*/p*/s*.txt"):
        target = reports / "files" / report.relative_to(mimic_copy / "files")
        target.parent.mkdir(parents=True, exist_ok=True)
        report.rename(target)
    with pytest.raises(FileNotFoundError, match="reports_root"):
        load_mimic_cxr(mimic_copy)
    moved = load_mimic_cxr(mimic_copy, reports_root=reports)
    original = load_mimic_cxr(mimic_root)
    assert moved["train"]["text"] == original["train"]["text"]
    assert moved["train"]["labels"] == original["train"]["labels"]


def test_mimic_study_without_usable_text_is_reported(mimic_copy):
    data = load_mimic_cxr(mimic_copy)
    first, second = data["train"][0], data["train"][1]
    paths = [
        mimic_copy / "files" / f"p{str(r['subject_id'])[:2]}" / f"p{r['subject_id']}" / f"s{r['study_id']}.txt"
        for r in (first, second)
    ]
    paths[0].write_text("                FINAL REPORT\n EXAMINATION:  CHEST\n\n INDICATION:  ___ with cough.\n")
    paths[1].unlink()
    reloaded, report = load_mimic_cxr(mimic_copy, return_report=True)
    assert {f"s{first['study_id']}", f"s{second['study_id']}"} <= set(report.no_text)
    assert first["study_id"] not in reloaded["train"]["study_id"]
    assert report.dropped["study without usable report text"] >= 2
    with pytest.raises(ValueError, match=r"report without usable text.*s\d+\.txt"):
        load_mimic_cxr(mimic_copy, empty_reports="error")


def test_mimic_bad_inputs_name_the_culprit(tmp_path, mimic_copy):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mimic_cxr(tmp_path / "nowhere")
    metadata = pd.read_csv(_table(mimic_copy, "metadata"))
    metadata.drop(columns=["ViewPosition"]).to_csv(_table(mimic_copy, "metadata"), index=False)
    with pytest.raises(ValueError, match="ViewPosition.*metadata.csv"):
        load_mimic_cxr(mimic_copy)
    metadata.to_csv(_table(mimic_copy, "metadata"), index=False)
    labels = pd.read_csv(_table(mimic_copy, "chexpert"))
    labels.loc[0, "Edema"] = 2
    labels.to_csv(_table(mimic_copy, "chexpert"), index=False)
    with pytest.raises(ValueError, match="'Edema'.*chexpert.csv"):
        load_mimic_cxr(mimic_copy)
    _table(mimic_copy, "chexpert").unlink()
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-chexpert.csv"):
        load_mimic_cxr(mimic_copy)


def test_mimic_unreadable_and_missing_images(mimic_copy):
    images = sorted((mimic_copy / "files").glob("p*/p*/s*/*.jpg"))
    frontal = set(pd.read_csv(_table(mimic_copy, "metadata")).query("ViewPosition != 'LATERAL'")["dicom_id"])
    broken, missing = [p for p in images if p.stem in frontal][:2]
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=broken.name):
        load_mimic_cxr(mimic_copy, verify="header")
    data, report = load_mimic_cxr(mimic_copy, verify="decode", skip_bad=True, return_report=True)
    assert report.bad_images == [str(broken)] and report.n_bad_images == 1
    assert broken.stem not in [d for split in data.values() for d in split["dicom_id"]]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        load_mimic_cxr(mimic_copy)


# ------------------------------------------------------------------------------------------------ CheXpert
def _chexpert_tree(root: Path) -> Path:
    folder = root / "CheXpert-v1.0-small"
    rows = {
        "train": [
            (
                "patient00001/study1/view1_frontal.jpg",
                "Frontal",
                {"Cardiomegaly": 1, "Edema": -1, "Pleural Effusion": 0},
            ),
            ("patient00001/study1/view2_lateral.jpg", "Lateral", {"Cardiomegaly": 1}),
            ("patient00002/study1/view1_frontal.jpg", "Frontal", {"No Finding": 1}),
        ],
        "valid": [("patient00003/study1/view1_frontal.jpg", "Frontal", {"Atelectasis": 1, "Pneumothorax": 0})],
    }
    for split, entries in rows.items():
        records = []
        for relative, view, labels in entries:
            path = folder / split / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((20, 24), 100, np.uint8)).save(path)
            records.append(
                {
                    "Path": f"CheXpert-v1.0-small/{split}/{relative}",
                    "Sex": "Female",
                    "Age": 61,
                    "Frontal/Lateral": view,
                    "AP/PA": "AP" if view == "Frontal" else "",
                    **{name: labels.get(name, "") for name in CHEXPERT_CLASSES},
                }
            )
        pd.DataFrame(records).to_csv(folder / f"{split}.csv", index=False)
    return folder


@pytest.mark.parametrize("policy, edema, mask", [("zeros", 0.0, 1.0), ("ones", 1.0, 1.0), ("ignore", 0.0, 0.0)])
def test_chexpert_uncertain_policies(tmp_path, policy, edema, mask):
    _chexpert_tree(tmp_path)
    data = load_chexpert(tmp_path, uncertain=policy)
    row = data["train"][0]
    edema_index = CHEXPERT_CLASSES.index("Edema")
    assert row["labels"][edema_index] == edema and row["label_mask"][edema_index] == mask
    assert row["labels"][CHEXPERT_CLASSES.index("Cardiomegaly")] == 1.0
    assert sum(row["labels"]) == 1.0 + edema and row["uncertain_classes"] == [edema_index]
    positives = "cardiomegaly, edema" if policy == "ones" else "cardiomegaly"
    assert row["text"] == f"this is a chest x ray of a patient with {positives} but this image has no pleural effusion"
    assert data["train"][1]["text"] == "this is a chest x ray of a patient with no finding"


def test_chexpert_paths_views_and_roots(tmp_path):
    folder = _chexpert_tree(tmp_path)
    for root in (tmp_path, folder):  # the parent folder or the dataset folder itself
        data = load_chexpert(root)
        assert len(data["train"]) == 2 and len(data["validation"]) == 1 and "test" not in data
        assert data["train"][0]["image"].size == (24, 20)
        assert data["train"][0]["patient_id"] == "patient00001"
    assert len(load_chexpert(tmp_path, frontal_only=False)["train"]) == 3
    assert "but this image" not in load_chexpert(tmp_path, caption_negatives=False)["validation"][0]["text"]


def test_chexpert_bad_values_and_missing_tables(tmp_path):
    folder = _chexpert_tree(tmp_path)
    frame = pd.read_csv(folder / "train.csv")
    frame.loc[0, "Fracture"] = 3
    frame.to_csv(folder / "train.csv", index=False)
    with pytest.raises(ValueError, match="'Fracture'.*train.csv"):
        load_chexpert(tmp_path)
    frame.drop(columns=["Frontal/Lateral"]).to_csv(folder / "train.csv", index=False)
    with pytest.raises(ValueError, match="Frontal/Lateral.*train.csv"):
        load_chexpert(tmp_path)
    with pytest.raises(FileNotFoundError, match="train.csv"):
        load_chexpert(tmp_path / "CheXpert-v1.0-small" / "train")


# ------------------------------------------------------------------------------------------------ 5x200 builder
def _multilabel_dataset(raw: np.ndarray) -> Dataset:
    features = Features({"image": Value("string"), **multilabel_features(CHEXPERT_CLASSES)})
    return dataset_from_columns(
        {"image": [f"{i}.jpg" for i in range(len(raw))], **multilabel_columns(raw, "zeros")}, features
    )


def test_chexpert_5x200_balance_determinism_and_candidates():
    raw = np.full((400, len(CHEXPERT_CLASSES)), np.nan, np.float32)
    for row in range(400):
        raw[row, CHEXPERT_CLASSES.index(CHEXPERT_5X200_CLASSES[row % 5])] = 1
    raw[::7, CHEXPERT_CLASSES.index("Edema")] = 1  # multi-positive: not a candidate unless Edema is the one
    raw[::11, CHEXPERT_CLASSES.index("Atelectasis")] = -1  # uncertain: never a candidate
    raw[::13, CHEXPERT_CLASSES.index("Support Devices")] = 1
    dataset = _multilabel_dataset(raw)
    five = build_chexpert_5x200(dataset, seed=3, n_per_class=20)
    assert isinstance(five.features["labels"], ClassLabel) and five.features["labels"].names == list(
        CHEXPERT_5X200_CLASSES
    )
    assert np.bincount(five["labels"]).tolist() == [20] * 5
    chosen = [int(name.split(".")[0]) for name in five["image"]]
    for index, label in zip(chosen, five["labels"]):
        row = raw[index]
        positives = [name for name in CHEXPERT_5X200_CLASSES if row[CHEXPERT_CLASSES.index(name)] == 1]
        assert positives == [CHEXPERT_5X200_CLASSES[label]]
        assert not (row == -1).any() and row[CHEXPERT_CLASSES.index("Support Devices")] != 1
    assert build_chexpert_5x200(dataset, seed=3, n_per_class=20)["image"] == five["image"]
    assert build_chexpert_5x200(dataset, seed=4, n_per_class=20)["image"] != five["image"]
    assert len(build_chexpert_5x200(dataset, seed=3, n_per_class=30, exclude_other_findings=False)) == 150
    with pytest.raises(ValueError, match="class '.*' has only"):
        build_chexpert_5x200(dataset, n_per_class=200)


# ------------------------------------------------------------------------------------------------ RSNA
def test_rsna_rows_collapse_and_balanced_test(tmp_path):
    write_demo_rsna(tmp_path, 30, image_size=32, seed=2)
    labels = pd.read_csv(tmp_path / "stage_2_train_labels.csv")
    positive = labels[labels["Target"] == 1].iloc[0]
    extra = positive.copy()
    extra["x"] += 5
    pd.concat([labels, extra.to_frame().T]).to_csv(tmp_path / "stage_2_train_labels.csv", index=False)
    data = load_rsna_pneumonia(tmp_path, split_fractions=(0.5, 0.0, 0.5), seed=1)
    everything = concatenate_datasets(list(data.values()))
    assert len(everything) == 30 and label_names(everything) == ["No Pneumonia", "Pneumonia"]
    row = everything[everything["patient_id"].index(positive["patientId"])]
    assert row["labels"] == 1 and len(row["boxes"]) == 2 and row["class_info"] == "Lung Opacity"
    assert 0.0 <= read_dicom(row["image"]).min() and read_dicom(row["image"]).max() <= 1.0
    balanced = build_rsna_balanced_test(everything, seed=0)
    counts = np.bincount(balanced["labels"])
    assert counts[0] == counts[1] == min(np.bincount(everything["labels"]))
    labels.loc[labels.index[-1], "Target"] = 1 - labels["Target"].iloc[-1]
    pd.concat([labels, labels.iloc[[-1]].assign(Target=1 - labels["Target"].iloc[-1])]).to_csv(
        tmp_path / "stage_2_train_labels.csv", index=False
    )
    with pytest.raises(ValueError, match="'Target'.*disagrees"):
        load_rsna_pneumonia(tmp_path)


# ------------------------------------------------------------------------------------------------ EMBED
@pytest.fixture(scope="module")
def embed_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    write_demo_embed(root, 96, image_size=40, seed=3, cview_fraction=0.2)
    return root


def test_embed_join_captions_and_path_mapping(embed_root):
    data, report = load_embed(embed_root, task="birads", return_report=True)
    everything = concatenate_datasets(list(data.values()))
    assert label_names(everything) == list(EMBED_BIRADS_CLASSES)
    assert report.dropped.get("image type not in ('2D',)", 0) > 0 and set(everything["image_type"]) == {"2D"}
    assert all(Path(p).is_file() and str(embed_root / "images") in p for p in everything["image"])
    clinical = pd.read_csv(embed_root / "tables" / "EMBED_OpenData_clinical.csv", dtype={"acc_anon": str})
    for row in everything.select(range(10)):
        same_side = clinical[(clinical["acc_anon"] == row["acc_anon"]) & (clinical["side"] == row["laterality"])].iloc[
            0
        ]
        assert row["birads"] == "ANBPSMK".index(same_side["asses"]) == row["labels"]
        assert f"BI-RADS Category {row['birads']}: {EMBED_BIRADS_CLASSES[row['birads']]}." in row["text"]
        assert (
            f"for the {'left' if row['laterality'] == 'L' else 'right'} breast with {row['view']} view" in row["text"]
        )
    assert any("The mass is" in t for t in everything["text"]) and any(
        "calcification is present" in t for t in everything["text"]
    )
    explicit = load_embed(embed_root, path_prefix="/mnt/NAS2/mammo/anon_dicom")
    assert explicit["train"]["image"] == data["train"]["image"]
    wrong = load_embed(embed_root, path_prefix="/elsewhere/dicoms")  # rows not under the prefix: suffix search
    assert wrong["train"]["image"] == data["train"]["image"]


def test_embed_images_read_dense_bright(embed_root):
    data = load_embed(embed_root)
    rows = data["train"].select(range(8))
    for path, side in zip(rows["image"], rows["laterality"]):  # MONOCHROME1, 12- and 16-bit variants alike
        image = read_dicom(path)
        assert image[0, -1 if side == "L" else 0] < 0.2  # the air in the corner away from the chest wall is dark
        assert image.max() > 0.5


def test_embed_density_task_and_builders(tmp_path, embed_root):
    density = concatenate_datasets(list(load_embed(embed_root, task="density").values()))
    assert set(density["labels"]) <= {0, 1, 2, 3} and all(
        d == l + 1 for d, l in zip(density["density"], density["labels"])
    )
    four = build_embed_density_4x500(density, n_per_class=2, seed=0)
    assert np.bincount(four["labels"]).tolist() == [2, 2, 2, 2]
    assert build_embed_density_4x500(density, n_per_class=2, seed=0)["image"] == four["image"]
    birads = concatenate_datasets(list(load_embed(embed_root, task="birads").values()))
    seven = build_embed_birads_7x200(birads, n_per_class=1, seed=0)
    assert sorted(seven["labels"]) == list(range(7))
    with pytest.raises(ValueError, match="density"):
        build_embed_density_4x500(birads, n_per_class=1)
    root = Path(shutil.copytree(embed_root / "tables", tmp_path / "tables")).parent
    clinical = pd.read_csv(root / "tables" / "EMBED_OpenData_clinical.csv", dtype={"acc_anon": str})
    male_exam = clinical["acc_anon"].iloc[0]
    clinical.loc[clinical["acc_anon"] == male_exam, "tissueden"] = 5
    clinical.to_csv(root / "tables" / "EMBED_OpenData_clinical.csv", index=False)
    _, report = load_embed(root, task="density", images_root=embed_root / "images", return_report=True)
    assert report.dropped["density 5 (male)"] >= 4
    clinical.loc[0, "asses"] = "Z"
    clinical.to_csv(root / "tables" / "EMBED_OpenData_clinical.csv", index=False)
    with pytest.raises(ValueError, match="'asses'.*clinical.csv"):
        load_embed(root, images_root=embed_root / "images")


def test_embed_unmappable_paths_and_missing_table(tmp_path, embed_root):
    shutil.copytree(embed_root / "tables", tmp_path / "tables")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="path_prefix"):
        load_embed(tmp_path)
    (tmp_path / "tables" / "EMBED_OpenData_metadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match="EMBED_OpenData_metadata.csv"):
        load_embed(tmp_path)
