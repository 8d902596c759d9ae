"""The local evaluate metrics: loaded by path, offline, in a fresh interpreter; CLEFT's own rules on top of
scikit-learn (NaN for an undefined class AUROC, ties counted against a retrieval query)."""

from __future__ import annotations

import math

from conftest import run_isolated
import pytest

from cleft_hf.metrics import AVAILABLE_METRICS, load_metric


def test_classification_metrics_on_a_hand_example():
    predictions, references = [0, 1, 1, 2], [0, 1, 0, 1]
    assert load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"] == 0.5
    subset = load_metric("accuracy", "multilabel").compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])
    assert subset["accuracy"] == 0.5
    f1 = load_metric("macro_f1").compute(predictions=predictions, references=references, labels=[0, 1, 2])
    assert f1["f1_per_class"] == {"0": pytest.approx(2 / 3), "1": 0.5, "2": 0.0}  # class 2 is never true
    assert f1["macro_f1"] == pytest.approx(7 / 18)
    scores = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.75, 0.1], [0.1, 0.8, 0.1]]
    auroc = load_metric("auroc", "multiclass").compute(
        predictions=scores, references=[0, 1, 0, 1], class_names=["a", "b", "c"]
    )
    assert auroc["auroc_per_class"]["a"] == 1.0 and auroc["auroc_per_class"]["b"] == 0.75
    assert math.isnan(auroc["auroc_per_class"]["c"]) and auroc["auroc"] == pytest.approx(0.875)  # c skipped
    assert load_metric("auroc").compute(predictions=[0.1, 0.4, 0.4, 0.8], references=[0, 0, 1, 1])["auroc"] == 0.875


def test_recall_at_k_counts_ties_against_the_query():
    scores = [[0.9, 0.1, 0.2, 0.3], [0.5, 0.2, 0.9, 0.8], [0.4, 0.4, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]]
    # wrong candidates scoring >= the correct one: 0, 2, 1 (a tie), 3
    result = load_metric("recall_at_k").compute(predictions=scores, references=[0, 0, 1, 0], k=[1, 2, 3, 4])
    assert result == {"recall_at_1": 0.25, "recall_at_2": 0.5, "recall_at_3": 0.75, "recall_at_4": 1.0}
    multi = load_metric("recall_at_k", "multi").compute(
        predictions=scores, references=[[0], [1, 3], [1], [0, 2]], k=[1, 2]
    )
    assert multi == {"recall_at_1": 0.25, "recall_at_2": 1.0}
    with pytest.raises(ValueError, match="query 1"):
        load_metric("recall_at_k").compute(predictions=scores[:2], references=[0, 9], k=1)


def test_bad_names_and_configs():
    with pytest.raises(ValueError, match="did you mean 'auroc'"):
        load_metric("aurroc")
    with pytest.raises(ValueError, match="auroc config"):
        load_metric("auroc", "ovo")
    with pytest.raises(ValueError, match="class indices"):
        load_metric("auroc", "multiclass").compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[0, 2])


def test_every_metric_loads_offline_in_a_fresh_interpreter(tmp_path):
    code = (
        "from cleft_hf.metrics import load_metric\n"
        f"for name in {list(AVAILABLE_METRICS)!r}: load_metric(name)\n"
        "print(load_metric('accuracy').compute(predictions=[1, 0], references=[1, 1])['accuracy'])\n"
    )
    done = run_isolated(tmp_path, code, block_cleft_hf=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0.5"
