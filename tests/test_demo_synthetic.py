"""Built-in demo data: determinism, reports that state the findings, labels, learnability, loadable trees."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
import pydicom
import pytest
from sklearn.linear_model import LogisticRegression

from cleft_hf.data import CHEXPERT_5X200_CLASSES, build_chexpert_5x200, load_chexpert, load_mimic_cxr
from cleft_hf.demo.synthetic import write_demo_chexpert, write_demo_embed, write_demo_mimic_cxr
from cleft_hf.demo.synthetic_cxr import ChestXRayRenderer
from cleft_hf.demo.synthetic_cxr_cases import CXR_FINDINGS, sample_case
from cleft_hf.demo.synthetic_reports import write_report

KEYWORDS = {  # every wording of a positive finding contains one of these
    "Cardiomegaly": ("cardiomegaly", "cardiac silhouette", "heart size is increased", "heart is", "enlarged heart"),
    "Pleural Effusion": ("effusion", "pleural fluid", "layering fluid"),
    "Consolidation": ("consolidation", "airspace", "opacification", "air bronchograms"),
    "Edema": ("edema", "perihilar", "vascular congestion", "fluid overload", "volume overload"),
    "Atelectasis": ("atelectasis", "volume loss", "collapse"),
}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_mimic_demo_is_byte_identical_for_a_seed(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_demo_mimic_cxr(tmp_path / name, 20, image_size=48, seed=seed, n_test_per_class=1)
    first, second, other = (_digests(tmp_path / name) for name in "abc")
    assert first == second and len(first) > 40
    assert first != other


def test_mimic_demo_test_split_reports_and_labels(tmp_path):
    summary = write_demo_mimic_cxr(tmp_path, 80, image_size=48, seed=2, n_test_per_class=4)
    assert summary["splits"] == {"train": 56, "validate": 4, "test": 20}
    data = load_mimic_cxr(tmp_path)
    five = build_chexpert_5x200(data["test"], n_per_class=4)  # every test study is a clean single-finding case
    assert len(five) == len(data["test"]) == 20
    for text, label in zip(five["text"], five["labels"]):
        name = CHEXPERT_5X200_CLASSES[label]
        assert any(word in text.lower() for word in KEYWORDS[name]), (name, text)
    labels = pd.read_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert list(labels.columns[2:]) == sorted(labels.columns[2:])  # the real table's alphabetical order
    assert set(np.unique(labels[list(CXR_FINDINGS)].to_numpy()[~np.isnan(labels[list(CXR_FINDINGS)].to_numpy())])) <= {
        -1.0,
        0.0,
        1.0,
    }


def test_reports_vary_name_the_classes_and_negate():
    rng = np.random.default_rng(0)
    named, texts, negated = dict.fromkeys(CXR_FINDINGS, 0), set(), 0
    for index in range(250):
        kind = CXR_FINDINGS[index % 5]
        report, labels = write_report(sample_case(rng, kind), rng)
        texts.add(report.split("FINDINGS:")[-1] if "FINDINGS:" in report else report)
        named[kind] += kind.lower() in report.lower()
        negated += sum(value == 0 for value in labels.values())
        assert labels[kind] == 1.0 and labels["No Finding"] != 1.0
    assert all(count >= 0.5 * 50 for count in named.values()), named
    assert len(texts) > 200 and negated > 50
    report, labels = write_report(sample_case(rng, "normal"), rng, layout="standard")
    assert labels["No Finding"] == 1.0 and "IMPRESSION:" in report
    assert (
        write_report(sample_case(rng, "Edema"), rng, layout="empty")[0]
        .rstrip()
        .endswith(("None.", "___.", "from ___."))
    )


def test_findings_are_learnable_from_small_images():
    """Logistic regression on 32x32 pixels separates the five findings (the demo data is learnable)."""
    renderer = ChestXRayRenderer(64)
    features, targets = [], []
    for index in range(5 * 90):
        rng = np.random.default_rng([11, index])
        pixels = renderer.render(sample_case(rng, CXR_FINDINGS[index % 5]), rng)
        features.append(
            np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR), np.float32).ravel() / 255.0
        )
        targets.append(index % 5)
    features, targets = np.stack(features), np.array(targets)
    train, test = slice(0, 300), slice(300, None)
    mean, std = features[train].mean(0), features[train].std(0) + 1e-3
    model = LogisticRegression(C=0.05, max_iter=3000).fit((features[train] - mean) / std, targets[train])
    accuracy = (model.predict((features[test] - mean) / std) == targets[test]).mean()
    assert accuracy >= 0.85, accuracy


def test_renderer_views_and_errors():
    rng = np.random.default_rng(0)
    renderer = ChestXRayRenderer(40)
    case = sample_case(rng, "multi", device_rate=1.0, uncertain_rate=1.0)
    assert 2 <= len(case.findings) <= 3 and case.device in ("tube", "pacemaker") and len(case.uncertain) == 1
    frontal, lateral = renderer.render(case, rng), renderer.render(case, rng, view="LATERAL")
    assert frontal.shape == lateral.shape == (40, 40) and frontal.dtype == np.uint8
    assert frontal.std() > 20  # anatomy, not a flat field
    with pytest.raises(ValueError, match="kind"):
        sample_case(rng, "Pneumothorax")
    with pytest.raises(ValueError, match="size"):
        ChestXRayRenderer(16)


def test_embed_demo_is_deterministic_and_varied(tmp_path):
    for name in "ab":
        write_demo_embed(tmp_path / name, 8, image_size=32, seed=4)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    metadata = pd.read_csv(tmp_path / "a" / "tables" / "EMBED_OpenData_metadata.csv")
    assert metadata["anon_dicom_path"].str.startswith("/mnt/NAS2/mammo/anon_dicom/").all()
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((tmp_path / "a" / "images").rglob("*.dcm"))]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(h.BitsStored) for h in headers} == {12, 16}


def test_chexpert_demo_loads_with_uncertain_labels(tmp_path):
    write_demo_chexpert(tmp_path, 30, image_size=32, seed=0, uncertain_rate=0.5)
    data = load_chexpert(tmp_path, uncertain="ignore", frontal_only=False)
    rows = sum(len(split) for split in data.values())
    assert rows == 30
    masks = np.concatenate([np.asarray(list(split["label_mask"])) for split in data.values()])
    assert (masks == 0).any()


def test_mammograms_carry_density_and_birads_findings():
    """Density is the fibroglandular fraction (pixel statistics of the breast separate the four classes); every BI-RADS
    letter but N adds a visible finding to the same breast."""
    from cleft_hf.demo.synthetic_mammo import render_mammogram, sample_findings

    features, targets = [], []
    for index in range(4 * 60):
        density = 1 + index % 4
        image = render_mammogram(np.random.default_rng([5, index]), density, "N", {}, height=64, width=52)
        breast = image[image > 0.1]
        features.append([*np.quantile(breast, [0.1, 0.25, 0.5, 0.75, 0.9]), breast.mean(), (breast > 0.5).mean()])
        targets.append(density)
    features, targets = np.array(features), np.array(targets)
    model = LogisticRegression(max_iter=5000).fit(features[:160], targets[:160])
    assert (model.predict(features[160:]) == targets[160:]).mean() >= 0.9
    for letter in "ABPSMK":
        codes = sample_findings(letter, np.random.default_rng(1))
        plain = render_mammogram(np.random.default_rng(2), 2, "N", {}, height=128, width=102)
        finding = render_mammogram(np.random.default_rng(2), 2, letter, codes, height=128, width=102)
        assert np.abs(finding - plain).max() > 0.15, letter
