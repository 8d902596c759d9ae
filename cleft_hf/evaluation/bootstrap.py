"""Bootstrap confidence intervals of classification metrics, vectorised over the draws.

A draw resamples the images with replacement; it is a row of multiplicities `W` `(draws, n)`, so every metric is
a weighted count: accuracy, balanced accuracy and macro F1 are matrix products with `W`, AUROC a weighted
Mann-Whitney statistic over the scores sorted once per class (ties count one half, as scikit-learn). The same
`W` scores two sets of predictions, which gives the paired interval of their difference.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
CONFIDENCE = 0.95


def bootstrap_weights(n_items: int, draws: int, seed: int) -> np.ndarray:
    """`(draws, n_items)` multiplicities of `draws` resamples with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_items, size=(draws, n_items))
    offsets = (np.arange(draws) * n_items)[:, None]
    return np.bincount((picks + offsets).ravel(), minlength=draws * n_items).reshape(draws, n_items).astype(float)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _auroc(weights: np.ndarray, probabilities: np.ndarray, one_hot: np.ndarray) -> np.ndarray:
    """`(draws,)` macro one-vs-rest AUROC over the classes with both outcomes present in a draw (NaN if none)."""
    per_class = np.full((weights.shape[0], one_hot.shape[1]), np.nan)
    for c in range(one_hot.shape[1]):
        order = np.argsort(probabilities[:, c], kind="stable")
        scores, positive = probabilities[order, c], one_hot[order, c]
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # groups of tied scores
        w = weights[:, order]
        pos = np.add.reduceat(w * positive, starts, axis=1)
        neg = np.add.reduceat(w * (1 - positive), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        pairs = n_pos * n_neg
        wins = (pos * (below + 0.5 * neg)).sum(1)
        per_class[:, c] = np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)
    defined = ~np.isnan(per_class)
    counts = defined.sum(1)
    return np.where(counts > 0, np.nansum(per_class, axis=1) / np.maximum(counts, 1), np.nan)


def weighted_metrics(weights: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each of `BOOTSTRAP_METRICS` -> `(draws,)` for multiplicities `weights` `(draws, n)`, `probabilities`
    `(n, n_classes)`, integer `labels` `(n,)`. Macro F1 averages the classes with examples in `labels` (0 where
    undefined in a draw, as scikit-learn's `zero_division=0`); balanced accuracy the classes present in a draw."""
    n_classes = probabilities.shape[1]
    one_hot = (labels[:, None] == np.arange(n_classes)[None, :]).astype(float)
    predicted = np.eye(n_classes)[probabilities.argmax(1)]
    true_positive = weights @ (one_hot * predicted)
    n_true, n_predicted = weights @ one_hot, weights @ predicted
    recall = _safe_divide(true_positive, n_true)
    present = (n_true > 0).sum(1)
    return {
        "accuracy": true_positive.sum(1) / weights.sum(1),
        "balanced_accuracy": recall.sum(1) / np.maximum(present, 1),
        "macro_f1": _safe_divide(2 * true_positive, n_true + n_predicted)[:, one_hot.sum(0) > 0].mean(1),
        "auroc": _auroc(weights, probabilities, one_hot),
    }


def _interval(values: np.ndarray) -> tuple[float, float]:
    """Percentile interval (`CONFIDENCE`) of the draws, NaN draws left out."""
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    probabilities: np.ndarray,
    labels: np.ndarray,
    draws: int = 1000,
    seed: int = 0,
    baseline: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """`{metric: (ci_low, ci_high)}` 95 % percentile intervals over `draws` image resamples. With `baseline`
    (other probabilities of the same images) the intervals are of the paired difference `metric - baseline's`."""
    probabilities, labels = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=np.int64)
    weights = bootstrap_weights(len(labels), draws, seed)
    values = weighted_metrics(weights, probabilities, labels)
    if baseline is not None:
        reference = weighted_metrics(weights, np.asarray(baseline, dtype=float), labels)
        values = {name: values[name] - reference[name] for name in values}
    return {name: _interval(values[name]) for name in BOOTSTRAP_METRICS}


def point_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of the sample itself (every multiplicity 1)."""
    probabilities, labels = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=np.int64)
    values = weighted_metrics(np.ones((1, len(labels))), probabilities, labels)
    return {name: float(value[0]) for name, value in values.items()}


__all__ = ["BOOTSTRAP_METRICS", "bootstrap_intervals", "bootstrap_weights", "point_metrics", "weighted_metrics"]
