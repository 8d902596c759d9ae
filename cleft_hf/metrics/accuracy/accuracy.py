"""Accuracy (multi-class, or exact match of multi-hot label sets) as a local `evaluate` module."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Fraction of examples whose prediction equals the reference. Config `default`: one class index per example.
Config `multilabel`: multi-hot lists; an example counts only if every class matches (subset accuracy).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class index (`default`) or multi-hot list (`multilabel`).
    references: true class index or multi-hot list.
    sample_weight (`list[float]`, optional): weight of each example.
Returns:
    accuracy (`float`): weighted fraction of correct examples, in [0, 1].
Examples:
    >>> accuracy = evaluate.load("cleft_hf/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""

_CITATION = ""


class Accuracy(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "multilabel"):
            raise ValueError(f"accuracy config must be 'default' or 'multilabel', got {self.config_name!r}")
        label = datasets.Value("int64")
        if self.config_name == "multilabel":
            label = datasets.Sequence(label)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        predicted = np.asarray(predictions, dtype=np.int64)
        expected = np.asarray(references, dtype=np.int64)
        if len(predicted) == 0:
            raise ValueError("accuracy needs at least one example")
        if predicted.shape != expected.shape:
            raise ValueError(f"accuracy predictions {predicted.shape} and references {expected.shape} differ in shape")
        correct = predicted == expected
        if correct.ndim == 2:
            correct = correct.all(axis=1)
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != correct.shape:
            raise ValueError(f"sample_weight has {weights.size} entries for {len(correct)} examples")
        return {"accuracy": float((weights * correct).sum() / weights.sum())}
