"""Accuracy (multi-class, or exact match of multi-hot label sets) as a local `evaluate` module over scikit-learn."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
scikit-learn's `accuracy_score`. Config `default`: one class index per example. Config `multilabel`: multi-hot
lists; an example counts only if every class matches (subset accuracy).
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


class Accuracy(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "multilabel"):
            raise ValueError(f"accuracy config must be 'default' or 'multilabel', got {self.config_name!r}")
        label = datasets.Value("int64")
        if self.config_name == "multilabel":
            label = datasets.Sequence(label)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, sample_weight=sample_weight))}
