"""Recall@K for retrieval (image->text or text->image) as a local `evaluate` module."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
For every query, its scores against all candidates and the index of its correct candidate (config `default`)
or the indices of all its correct candidates (config `multi`). A query is a hit at K when its best-scored
correct candidate ranks among the first K, where the rank counts the wrong candidates scoring higher OR EQUAL
(ties count against the query, so constant scores cannot look good). Recall@K = fraction of hits.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of scores, one per candidate (the row of the query-candidate similarity matrix).
    references: index of the correct candidate (`default`) or list of correct indices (`multi`).
    k (`int` or `list[int]`, default [1, 5, 10]): cut-offs.
Returns:
    recall_at_<k> (`float`): for each k.
Examples:
    >>> recall = evaluate.load("cleft_hf/metrics/recall_at_k")
    >>> recall.compute(predictions=[[0.9, 0.1], [0.8, 0.3]], references=[0, 1], k=[1, 2])
    {'recall_at_1': 0.5, 'recall_at_2': 1.0}
"""

_CITATION = ""


class RecallAtK(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "multi"):
            raise ValueError(f"recall_at_k config must be 'default' or 'multi', got {self.config_name!r}")
        target = datasets.Value("int64")
        if self.config_name == "multi":
            target = datasets.Sequence(target)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": target}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5, 10)):
        cutoffs = [k] if isinstance(k, int) else list(k)
        if not cutoffs or any(not isinstance(c, (int, np.integer)) or c < 1 for c in cutoffs):
            raise ValueError(f"recall_at_k k must be positive ints, got {k!r}")
        if len(predictions) == 0:
            raise ValueError("recall_at_k needs at least one query")
        ranks = []
        for query, (scores, targets) in enumerate(zip(predictions, references)):
            scores = np.asarray(scores, dtype=np.float64)
            correct = np.zeros(len(scores), dtype=bool)
            targets = np.atleast_1d(np.asarray(targets, dtype=np.int64))
            if targets.size == 0 or targets.min() < 0 or targets.max() >= len(scores):
                raise ValueError(
                    f"recall_at_k query {query}: correct indices {targets.tolist()} not in [0, {len(scores)})"
                )
            correct[targets] = True
            best = scores[correct].max()
            ranks.append(int((scores[~correct] >= best).sum()))
        ranks = np.asarray(ranks)
        return {f"recall_at_{c}": float((ranks < c).mean()) for c in cutoffs}
