"""Linear probing on frozen image embeddings with 1 %, 10 % and 100 % of the training labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified `fraction` of `labels` (at least one example per class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    max_iter: int = 2000,
) -> dict[float, dict[str, np.ndarray]]:
    """Fit a multinomial logistic regression per label fraction, with class weights inversely proportional to
    the class frequencies (`class_weight="balanced"`), so an imbalanced training set (EMBED BI-RADS) does not
    collapse onto its majority class.

    Args: features `(N, D)`, single-label class indices `(N,)`.
    Returns: `{fraction: {"predictions": (N_test,), "probabilities": (N_test, C), "balanced_accuracy": float,
    "n_train": int}}` (balanced accuracy: the mean of the per-class recalls).
    """
    classes = np.unique(np.concatenate([train_labels, test_labels]))
    results = {}
    for fraction in fractions:
        index = label_subset(train_labels, fraction, seed)
        classifier = LogisticRegression(max_iter=max_iter, C=1.0, class_weight="balanced")
        classifier.fit(train_features[index], train_labels[index])
        probabilities = np.zeros((len(test_features), len(classes)))
        probabilities[:, np.searchsorted(classes, classifier.classes_)] = classifier.predict_proba(test_features)
        predictions = classes[probabilities.argmax(1)]
        results[fraction] = {
            "predictions": predictions,
            "balanced_accuracy": float(balanced_accuracy_score(test_labels, predictions)),
            "probabilities": probabilities,
            "n_train": int(len(index)),
        }
    return results
