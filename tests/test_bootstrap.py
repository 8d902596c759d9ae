"""Bootstrap intervals: weighted metrics equal the evaluation's metrics, seeded draws, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from cleft_hf.evaluation.bootstrap import bootstrap_intervals, bootstrap_weights, point_metrics, weighted_metrics
from cleft_hf.evaluation.runner import classification_metrics


def _scores(n: int = 120, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return np.round(probabilities, 2), labels  # rounded: tied scores, as a resample's duplicates


def test_point_metrics_equal_the_evaluation_metrics():
    from sklearn.metrics import balanced_accuracy_score

    probabilities, labels = _scores()
    names = ["a", "b", "c", "d"]
    expected = classification_metrics(probabilities, labels, names)
    measured = point_metrics(probabilities, labels)
    for metric, (value, _) in expected.items():
        assert measured[metric] == pytest.approx(value, abs=1e-12), metric
    assert measured["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probabilities.argmax(1)))


def test_weighted_metrics_equal_the_metrics_of_the_resampled_images():
    probabilities, labels = _scores(n=40)
    weights = bootstrap_weights(40, draws=5, seed=3)
    assert weights.sum(1).tolist() == [40] * 5
    batched = weighted_metrics(weights, probabilities, labels)
    for draw in range(5):
        picks = np.repeat(np.arange(40), weights[draw].astype(int))  # the resample itself
        for metric, value in point_metrics(probabilities[picks], labels[picks]).items():
            assert batched[metric][draw] == pytest.approx(value, abs=1e-12), (metric, draw)


def test_intervals_are_seeded_and_hold_the_point_estimate():
    probabilities, labels = _scores()
    intervals = bootstrap_intervals(probabilities, labels, draws=300, seed=7)
    assert intervals == bootstrap_intervals(probabilities, labels, draws=300, seed=7)
    assert intervals != bootstrap_intervals(probabilities, labels, draws=300, seed=8)
    for metric, value in point_metrics(probabilities, labels).items():
        low, high = intervals[metric]
        assert 0.0 <= low <= value <= high <= 1.0 and high - low < 0.4, metric


def test_paired_difference_of_the_same_scores_is_zero_and_of_better_scores_positive():
    probabilities, labels = _scores()
    same = bootstrap_intervals(probabilities, labels, draws=200, seed=0, baseline=probabilities)
    assert all(interval == (0.0, 0.0) for interval in same.values())
    chance = np.full_like(probabilities, 0.25) + np.random.default_rng(1).normal(scale=1e-3, size=probabilities.shape)
    better = bootstrap_intervals(probabilities, labels, draws=200, seed=0, baseline=chance)
    assert better["accuracy"][0] > 0 and better["auroc"][0] > 0


def test_zero_shot_records_carry_intervals_templates_and_round_trip():
    from types import SimpleNamespace

    from cleft_hf.evaluation.report import MetricRecord, markdown_table
    from cleft_hf.evaluation.runner import paired_difference, zero_shot_records

    probabilities, labels = _scores()
    names = ["a", "b", "c", "d"]
    templates = ["a photo of {}.", "{}"]
    args = SimpleNamespace(bootstrap=200, seed=0)
    records = zero_shot_records(probabilities, labels, names, args, "hand", templates)
    assert {r.metric for r in records} == {"accuracy", "balanced_accuracy", "macro_f1", "auroc"}
    for record in records:
        assert record.ci_low <= record.value <= record.ci_high and record.setting["prompt_templates"] == templates
        assert MetricRecord.from_dict(record.to_dict()) == record
    assert records[0].label == "zero-shot accuracy, hand prompts (2 templates)"
    unbootstrapped = zero_shot_records(
        probabilities, labels, names, SimpleNamespace(bootstrap=0, seed=0), "hand", None
    )
    assert all("ci_low" not in r.to_dict() for r in unbootstrapped)  # --bootstrap 0: records as before
    difference = paired_difference({"hand": probabilities[::-1].copy(), "learned": probabilities}, labels, args)
    table = markdown_table({"metrics": [r.to_dict() for r in records], "zero_shot_difference": difference})
    accuracy = records[0]
    assert f"| {accuracy.label} | {accuracy.value:.4f} [{accuracy.ci_low:.4f}, {accuracy.ci_high:.4f}] |" in table
    assert "| zero-shot AUROC, learned - hand prompts (paired) |" in table
