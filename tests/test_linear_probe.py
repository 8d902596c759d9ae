"""Linear probe: class weights on imbalanced training sets, balanced accuracy, label fractions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from cleft_hf.evaluation.linear_probe import label_subset, linear_probe


def _imbalanced(rng, counts, shift=0.6):
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    features = rng.normal(size=(len(labels), 8))
    features[np.arange(len(labels)), labels] += shift  # a weak class signal on one axis per class
    return features, labels


def test_class_weights_keep_rare_classes_on_an_imbalanced_training_set():
    rng = np.random.default_rng(0)
    train, train_labels = _imbalanced(rng, [900, 40, 40, 40])
    test, test_labels = _imbalanced(rng, [100, 100, 100, 100])
    probe = linear_probe(train, train_labels, test, test_labels, fractions=(1.0,))[1.0]
    assert probe["balanced_accuracy"] == balanced_accuracy_score(test_labels, probe["predictions"])
    assert len(set(probe["predictions"].tolist())) == 4  # not everything the majority class
    assert probe["balanced_accuracy"] > 0.4 and probe["probabilities"].shape == (400, 4)


def test_label_subset_is_stratified_with_one_example_per_class_at_least():
    labels = np.array([0] * 95 + [1] * 5)
    index = label_subset(labels, 0.1, seed=0)
    assert sorted(np.bincount(labels[index]).tolist()) == [1, 10]
