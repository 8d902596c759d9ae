"""Loader edge cases handled alike: no readable image, ambiguous CheXpert roots, invalid arguments before any file
is read, the cached Arrow table (hit, stale, off), the CheXpert 5x200 split kept out of training, fast subsets."""

from __future__ import annotations

import logging

from datasets import ClassLabel, Features, Value
import numpy as np
import pandas as pd
import pytest

from cleft_hf.data import (
    CHEXPERT_5X200_CLASSES,
    CHEXPERT_CLASSES,
    load_chexpert,
    load_embed,
    load_mimic_cxr,
    load_rsna_pneumonia,
)
from cleft_hf.data._tables import column_values, dataset_from_columns, multilabel_columns, multilabel_features
from cleft_hf.data.load_cache import image_paths
from cleft_hf.data.splits import exclude_images, select_with_labels
from cleft_hf.demo.synthetic import write_demo_embed, write_demo_mimic_cxr, write_demo_rsna

LOADERS = {"chexpert": load_chexpert, "mimic_cxr": load_mimic_cxr, "rsna": load_rsna_pneumonia, "embed": load_embed}


def _chexpert(folder, rows: int = 60, seed: int = 0):
    """A CheXpert-v1.0-small folder with ``rows`` frontal training images, each positive for one 5x200 class."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(rows):
        relative = f"train/patient{index:05d}/study1/view1_frontal.jpg"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"")
        labels = dict.fromkeys(CHEXPERT_CLASSES, "")
        labels[CHEXPERT_5X200_CLASSES[index % 5]] = 1
        labels["Fracture"] = rng.choice([0, ""])
        records.append(
            {
                "Path": f"{folder.name}/{relative}",
                "Sex": "Male",
                "Age": 50,
                "Frontal/Lateral": "Frontal",
                "AP/PA": "PA",
                **labels,
            }
        )
    pd.DataFrame(records).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(records[:3]).to_csv(folder / "valid.csv", index=False)
    return folder


@pytest.fixture
def trees(tmp_path):
    (tmp_path / "chexpert" / "CheXpert-v1.0-small").mkdir(parents=True)
    _chexpert(tmp_path / "chexpert" / "CheXpert-v1.0-small")
    write_demo_mimic_cxr(tmp_path / "mimic_cxr", 20, image_size=32, seed=1, n_test_per_class=1, empty_report_rate=0.0)
    write_demo_rsna(tmp_path / "rsna", 12, image_size=32, seed=2)
    write_demo_embed(tmp_path / "embed", 12, image_size=40, seed=3)
    return tmp_path


@pytest.mark.parametrize("name", LOADERS)
def test_no_readable_image_is_the_same_error_everywhere(trees, name):
    suffix = {"chexpert": "*.jpg", "mimic_cxr": "*.jpg", "rsna": "*.dcm", "embed": "*.dcm"}[name]
    for path in (trees / name).rglob(suffix):
        path.write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"no images left to load \(\d+ unreadable or missing images skipped"):
        LOADERS[name](trees / name, verify="decode", skip_bad=True)


@pytest.mark.parametrize(
    "name, arguments, message",
    [
        ("chexpert", {"uncertain": "maybe"}, "uncertain must be one of"),
        ("chexpert", {"verify": "all"}, "verify must be one of"),
        ("chexpert", {"splits": ("train", "dev")}, "CheXpert split must be one of"),
        ("mimic_cxr", {"labeler": "chexbert"}, "labeler must be one of"),
        ("mimic_cxr", {"uncertain": "maybe"}, "uncertain must be one of"),
        ("mimic_cxr", {"fallback": "all"}, "fallback must be one of"),
        ("rsna", {"split_fractions": (1, -1, 0)}, "split_fractions"),
        ("embed", {"task": "bi-rads"}, "task must be one of"),
        ("embed", {"verify": "all"}, "verify must be one of"),
    ],
)
def test_invalid_arguments_are_rejected_before_reading_files(tmp_path, name, arguments, message):
    with pytest.raises(ValueError, match=message):  # the root does not even exist: no file was looked at
        LOADERS[name](tmp_path / "missing", **arguments)


def test_chexpert_root_with_two_versions_asks_which(tmp_path):
    for name in ("CheXpert-v1.0", "CheXpert-v1.0-small"):
        (tmp_path / name).mkdir()
        _chexpert(tmp_path / name, rows=5)
    with pytest.raises(ValueError, match=r"several CheXpert folders \(CheXpert-v1.0, CheXpert-v1.0-small\)"):
        load_chexpert(tmp_path)
    assert len(load_chexpert(tmp_path / "CheXpert-v1.0")["train"]) == 5


def test_cached_table_hit_stale_and_off(trees, caplog):
    root = trees / "chexpert"
    first = load_chexpert(root)
    with caplog.at_level(logging.INFO, logger="cleft_hf.data.load_cache"):
        second = load_chexpert(root)
    assert "loaded from the cache" in caplog.text
    assert second["train"]["text"] == first["train"]["text"] and image_paths(second) == image_paths(first)
    assert second["train"].features == first["train"].features
    missing = root / "CheXpert-v1.0-small" / "train" / "patient00007" / "study1" / "view1_frontal.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="patient00007"):  # a cached table never hides a missing image
        load_chexpert(root)
    assert len(load_chexpert(root, skip_bad=True, cache=False)["train"]) == len(first["train"]) - 1


def test_chexpert_5x200_split_is_removed_from_training(trees):
    data = load_chexpert(trees / "chexpert", split_5x200=4, seed=1)
    assert len(data["test_5x200"]) == 20 and len(data["train"]) == 60 - 20
    assert not set(data["test_5x200"]["path"]) & set(data["train"]["path"])
    assert data["test_5x200"].features["labels"].names == list(CHEXPERT_5X200_CLASSES)
    with pytest.raises(ValueError, match="include 'train'"):
        load_chexpert(trees / "chexpert", splits=("validation",), split_5x200=4)


def test_arrow_subsets_match_the_slow_datasets_path():
    raw = np.random.default_rng(0).choice([1.0, 0.0, -1.0, np.nan], size=(500, len(CHEXPERT_CLASSES)))
    features = Features({"image": Value("string"), "path": Value("string"), **multilabel_features(CHEXPERT_CLASSES)})
    dataset = dataset_from_columns(
        {
            "image": [f"{i}.jpg" for i in range(500)],
            "path": [f"p{i}" for i in range(500)],
            **multilabel_columns(raw, "zeros"),
        },
        features,
    )
    assert dataset[3]["positive_classes"] == np.flatnonzero(raw[3] == 1).tolist()
    assert column_values(dataset, "labels").shape == (500, len(CHEXPERT_CLASSES))
    indices, labels = [5, 2, 400], [1, 0, 4]
    fast = select_with_labels(dataset, indices, labels, CHEXPERT_5X200_CLASSES)
    slow = (
        dataset.select(indices)
        .remove_columns(["labels", "label_mask"])
        .add_column("labels", labels, feature=ClassLabel(names=list(CHEXPERT_5X200_CLASSES)))
    )
    assert fast.features == slow.features and fast.to_list() == slow.to_list()
    assert exclude_images(dataset, fast)["path"] == [f"p{i}" for i in range(500) if i not in indices]
