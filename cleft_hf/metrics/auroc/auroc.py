"""One-vs-rest area under the ROC curve (binary, multi-class, multi-label) as a local `evaluate` module."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Area under the ROC curve computed from ranks (Mann-Whitney U, ties share the average rank), one class against
the rest. Configs: `binary` (one score per example, references 0/1), `multiclass` (one score per class per
example, references are class indices) and `multilabel` (scores and multi-hot references per class).
Any monotone score works per class (probabilities, logits, cosine similarities); note that a softmax over
classes changes the per-class ranking, so pass the scores you want ranked. A class whose references are all
positive or all negative has no AUROC: its entry is NaN and the macro mean skips it.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: `binary`: float score per example; `multiclass`/`multilabel`: list of C float scores.
    references: `binary`: 0/1; `multiclass`: class index in [0, C); `multilabel`: list of C values 0/1.
    class_names (`list[str]`, optional): names for `auroc_per_class` (default "0", "1", ...).
Returns:
    auroc (`float`): AUROC (`binary`) or macro mean over classes with both outcomes present.
    auroc_per_class (`dict[str, float]`, not for `binary`): AUROC of each class, NaN when undefined.
Examples:
    >>> auroc = evaluate.load("cleft_hf/metrics/auroc", "multiclass")
    >>> auroc.compute(predictions=[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], references=[0, 1, 2])["auroc"]
    1.0
"""

_CITATION = """
@article{hanley1982meaning, title={The meaning and use of the area under a receiver operating characteristic
(ROC) curve}, author={Hanley, James A and McNeil, Barbara J}, journal={Radiology}, year={1982}}
"""

_CONFIGS = ("binary", "multiclass", "multilabel")


def average_ranks(values):
    """1-based ranks of `values` (N,), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(values)]]) - 1
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return ranks


def binary_auroc(scores, is_positive):
    """AUROC of scores (N,) for boolean labels (N,); NaN when only one label value is present."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[is_positive].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


class Auroc(evaluate.Metric):
    def _info(self):
        if self.config_name == "default":
            self.config_name = "binary"
        if self.config_name not in _CONFIGS:
            raise ValueError(f"auroc config must be one of {_CONFIGS}, got {self.config_name!r}")
        scores = datasets.Value("float64")
        labels = datasets.Value("int64")
        if self.config_name != "binary":
            scores = datasets.Sequence(scores)
        if self.config_name == "multilabel":
            labels = datasets.Sequence(labels)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": scores, "references": labels}),
            reference_urls=["https://en.wikipedia.org/wiki/Receiver_operating_characteristic"],
        )

    def _compute(self, predictions, references, class_names=None):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if len(scores) == 0:
            raise ValueError("auroc needs at least one example")
        if self.config_name == "binary":
            if not np.isin(labels, (0, 1)).all():
                raise ValueError("auroc (binary) references must be 0 or 1")
            return {"auroc": binary_auroc(scores, labels == 1)}
        if scores.ndim != 2:
            raise ValueError("auroc predictions must hold the same number of class scores for every example")
        num_classes = scores.shape[1]
        if self.config_name == "multiclass":
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(f"auroc (multiclass) references must be class indices in [0, {num_classes})")
            targets = labels[:, None] == np.arange(num_classes)[None, :]
        else:
            if labels.shape != scores.shape or not np.isin(labels, (0, 1)).all():
                raise ValueError("auroc (multilabel) references must be multi-hot 0/1 lists shaped like predictions")
            targets = labels == 1
        names = [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
        per_class = [binary_auroc(scores[:, c], targets[:, c]) for c in range(num_classes)]
        defined = [value for value in per_class if not np.isnan(value)]
        macro = float(np.mean(defined)) if defined else float("nan")
        return {"auroc": macro, "auroc_per_class": dict(zip(names, per_class))}
