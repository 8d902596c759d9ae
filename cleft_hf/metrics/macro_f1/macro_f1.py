"""Macro-averaged F1 (multi-class or multi-label) as a local `evaluate` module."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN). Config `default`: one class index per
example, the classes are those given in `labels` or else every class seen in predictions or references
(as scikit-learn). Config `multilabel`: multi-hot lists, one class per position. A class with no true or
predicted example has F1 0.
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

_CITATION = ""


class MacroF1(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "multilabel"):
            raise ValueError(f"macro_f1 config must be 'default' or 'multilabel', got {self.config_name!r}")
        label = datasets.Value("int64")
        if self.config_name == "multilabel":
            label = datasets.Sequence(label)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
        )

    def _compute(self, predictions, references, labels=None):
        predicted = np.asarray(predictions, dtype=np.int64)
        expected = np.asarray(references, dtype=np.int64)
        if len(predicted) == 0:
            raise ValueError("macro_f1 needs at least one example")
        if predicted.shape != expected.shape:
            raise ValueError(f"macro_f1 predictions {predicted.shape} and references {expected.shape} differ in shape")
        if predicted.ndim == 2:
            if labels is not None:
                raise ValueError("macro_f1 (multilabel) takes no `labels`: every position is a class")
            predicted_hot, expected_hot = predicted == 1, expected == 1
            names = [str(c) for c in range(predicted.shape[1])]
        else:
            classes = np.unique(np.concatenate([predicted, expected])) if labels is None else np.asarray(labels)
            predicted_hot = predicted[:, None] == classes[None, :]
            expected_hot = expected[:, None] == classes[None, :]
            names = [str(c) for c in classes]
        true_positives = (predicted_hot & expected_hot).sum(axis=0)
        errors = (predicted_hot ^ expected_hot).sum(axis=0)
        denominators = 2 * true_positives + errors
        per_class = np.where(denominators > 0, 2 * true_positives / np.maximum(denominators, 1), 0.0)
        return {"macro_f1": float(per_class.mean()), "f1_per_class": dict(zip(names, per_class.tolist()))}
