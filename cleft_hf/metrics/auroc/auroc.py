"""One-vs-rest area under the ROC curve (binary, multi-class, multi-label) as a local `evaluate` module over
scikit-learn."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """
scikit-learn's `roc_auc_score`, one class against the rest. Configs: `binary` (one score per example,
references 0/1), `multiclass` (one score per class per example, references are class indices) and `multilabel`
(scores and multi-hot references per class). Any monotone score works per class (probabilities, logits, cosine
similarities). A class whose references are all positive or all negative has no AUROC: its entry is NaN and the
macro mean skips it (a scikit-learn error otherwise).
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

_CONFIGS = ("binary", "multiclass", "multilabel")


def one_vs_rest_auroc(is_positive, scores):
    """AUROC of `scores` (N,) for boolean `is_positive` (N,); NaN when only one outcome is present."""
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(roc_auc_score(is_positive, scores))


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
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": scores, "references": labels}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, predictions, references, class_names=None):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if self.config_name == "binary":
            return {"auroc": one_vs_rest_auroc(labels == 1, scores)}
        num_classes = scores.shape[1]
        if self.config_name == "multiclass":
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(f"auroc (multiclass) references must be class indices in [0, {num_classes})")
            labels = labels[:, None] == np.arange(num_classes)[None, :]
        names = [str(n) for n in (range(num_classes) if class_names is None else class_names)]
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
        per_class = [one_vs_rest_auroc(labels[:, c] == 1, scores[:, c]) for c in range(num_classes)]
        defined = [value for value in per_class if not np.isnan(value)]
        macro = float(np.mean(defined)) if defined else float("nan")
        return {"auroc": macro, "auroc_per_class": dict(zip(names, per_class))}
