"""Macro-averaged F1 (multi-class or multi-label) as a local `evaluate` module over scikit-learn."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = """
scikit-learn's `f1_score` per class (`zero_division=0`) and its unweighted mean. Config `default`: one class
index per example, the classes are those given in `labels` or else every class seen in predictions or
references. Config `multilabel`: multi-hot lists, one class per position.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class index (`default`) or multi-hot list (`multilabel`).
    references: true class index or multi-hot list.
    labels (`list[int]`, optional, `default` only): the classes to average over.
Returns:
    macro_f1 (`float`): mean F1 over classes.
    f1_per_class (`dict[str, float]`): F1 of each class.
Examples:
    >>> f1 = evaluate.load("cleft_hf/metrics/macro_f1")
    >>> f1.compute(predictions=[0, 1, 1], references=[0, 1, 0])["macro_f1"]
    0.6666666666666666
"""


class MacroF1(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "multilabel"):
            raise ValueError(f"macro_f1 config must be 'default' or 'multilabel', got {self.config_name!r}")
        label = datasets.Value("int64")
        if self.config_name == "multilabel":
            label = datasets.Sequence(label)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
        )

    def _compute(self, predictions, references, labels=None):
        if self.config_name == "multilabel":
            if labels is not None:
                raise ValueError("macro_f1 (multilabel) takes no `labels`: every position is a class")
            names = [str(c) for c in range(np.shape(references)[1])]
        else:
            names = [
                str(c) for c in (np.unique(np.concatenate([predictions, references])) if labels is None else labels)
            ]
        per_class = f1_score(references, predictions, labels=labels, average=None, zero_division=0)
        return {"macro_f1": float(np.mean(per_class)), "f1_per_class": dict(zip(names, per_class.tolist()))}
