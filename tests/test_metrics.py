"""Tests of the local evaluate metrics against scikit-learn and hand-made examples."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from cleft_hf.metrics import load_metric


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    weights = rng.random(200)
    metric = load_metric("accuracy")
    assert metric.compute(predictions=predictions, references=references)["accuracy"] == pytest.approx(
        accuracy_score(references, predictions)
    )
    weighted = metric.compute(predictions=predictions, references=references, sample_weight=weights)["accuracy"]
    assert weighted == pytest.approx(accuracy_score(references, predictions, sample_weight=weights))
    hot_pred, hot_ref = rng.integers(0, 2, (50, 4)), rng.integers(0, 2, (50, 4))
    hot_ref[:10] = hot_pred[:10]
    subset = load_metric("accuracy", "multilabel").compute(predictions=hot_pred, references=hot_ref)["accuracy"]
    assert subset == pytest.approx(accuracy_score(hot_ref, hot_pred))


def test_accuracy_incremental_batches():
    metric = load_metric("accuracy")
    metric.add_batch(predictions=[0, 1, 2], references=[0, 1, 1])
    metric.add_batch(predictions=[2], references=[2])
    assert metric.compute()["accuracy"] == 0.75


def test_auroc_binary_multiclass_multilabel_match_sklearn():
    rng = np.random.default_rng(1)
    binary_scores = rng.integers(0, 6, 120).astype(float)  # many ties
    binary_labels = rng.integers(0, 2, 120)
    result = load_metric("auroc").compute(predictions=binary_scores, references=binary_labels)
    assert result["auroc"] == pytest.approx(roc_auc_score(binary_labels, binary_scores), abs=1e-12)

    probabilities = _softmax(rng.normal(size=(150, 5)))
    labels = rng.integers(0, 5, 150)
    names = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    result = load_metric("auroc", "multiclass").compute(predictions=probabilities, references=labels, class_names=names)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    one_vs_rest = [roc_auc_score(labels == c, probabilities[:, c]) for c in range(5)]
    assert list(result["auroc_per_class"]) == names
    np.testing.assert_allclose(list(result["auroc_per_class"].values()), one_vs_rest)

    multi_hot = rng.integers(0, 2, (80, 3))
    scores = rng.normal(size=(80, 3)) + multi_hot
    result = load_metric("auroc", "multilabel").compute(predictions=scores, references=multi_hot)
    assert result["auroc"] == pytest.approx(roc_auc_score(multi_hot, scores, average="macro"))
    np.testing.assert_allclose(list(result["auroc_per_class"].values()), roc_auc_score(multi_hot, scores, average=None))


def test_auroc_skips_class_without_both_outcomes():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    result = load_metric("auroc", "multiclass").compute(predictions=scores, references=[0, 1, 0, 1])
    assert math.isnan(result["auroc_per_class"]["2"])
    assert result["auroc"] == pytest.approx(1.0)


def test_auroc_rejects_bad_references():
    with pytest.raises(ValueError, match="class indices"):
        load_metric("auroc", "multiclass").compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[0, 2])
    with pytest.raises(ValueError, match="config"):
        load_metric("auroc", "ovo")


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(2)
    predictions, references = rng.integers(0, 4, 300), rng.integers(0, 5, 300)  # class 4 never predicted
    result = load_metric("macro_f1").compute(predictions=predictions, references=references)
    assert result["macro_f1"] == pytest.approx(f1_score(references, predictions, average="macro", zero_division=0))
    np.testing.assert_allclose(
        list(result["f1_per_class"].values()), f1_score(references, predictions, average=None, zero_division=0)
    )
    restricted = load_metric("macro_f1").compute(predictions=predictions, references=references, labels=[0, 1, 2])
    expected = f1_score(references, predictions, labels=[0, 1, 2], average="macro", zero_division=0)
    assert restricted["macro_f1"] == pytest.approx(expected)
    hot_pred, hot_ref = rng.integers(0, 2, (60, 4)), rng.integers(0, 2, (60, 4))
    result = load_metric("macro_f1", "multilabel").compute(predictions=hot_pred, references=hot_ref)
    assert result["macro_f1"] == pytest.approx(f1_score(hot_ref, hot_pred, average="macro", zero_division=0))


def test_recall_at_k_hand_example():
    # Query 0: correct candidate ranked 1st; query 1: 3rd; query 2: tied with a wrong one (counts as 2nd);
    # query 3: multi-positive in `multi` config below.
    scores = [
        [0.9, 0.1, 0.2, 0.3],
        [0.5, 0.2, 0.9, 0.8],
        [0.4, 0.4, 0.1, 0.0],
        [0.1, 0.2, 0.3, 0.4],
    ]
    result = load_metric("recall_at_k").compute(predictions=scores, references=[0, 0, 1, 0], k=[1, 2, 3, 4])
    # ranks (wrong candidates scoring >= the correct one): 0, 2, 1, 3
    assert result == {"recall_at_1": 0.25, "recall_at_2": 0.5, "recall_at_3": 0.75, "recall_at_4": 1.0}
    multi = load_metric("recall_at_k", "multi").compute(
        predictions=scores, references=[[0], [1, 3], [1], [0, 2]], k=[1, 2]
    )
    # ranks: 0, 1 (0.8 beaten only by 0.9), 1 (tie), 1 (0.3 beaten by 0.4)
    assert multi == {"recall_at_1": 0.25, "recall_at_2": 1.0}
    with pytest.raises(ValueError, match="query 1"):
        load_metric("recall_at_k").compute(predictions=scores[:2], references=[0, 9], k=1)


def test_unknown_metric_name_suggests_close_match():
    with pytest.raises(ValueError, match="did you mean 'auroc'"):
        load_metric("aurroc")


def test_load_metric_works_offline_in_a_fresh_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    code = (
        "from cleft_hf.metrics import load_metric, AVAILABLE_METRICS\n"
        "for name in AVAILABLE_METRICS: load_metric(name)\n"
        "print(load_metric('accuracy').compute(predictions=[1, 0], references=[1, 1])['accuracy'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0.5"
