"""CLEFT's metrics as local `evaluate` modules, loaded by path (no Hub access needed).

`load_metric("auroc", "multiclass")` returns an `evaluate.EvaluationModule`; use `.compute(...)` or
`.add_batch(...)` + `.compute()`. Available: accuracy, auroc, macro_f1, recall_at_k (see each module's
docstring for configs and inputs).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE_METRICS = ("accuracy", "auroc", "macro_f1", "recall_at_k")


def metric_path(name: str) -> Path:
    """Folder of the local evaluate module `name`."""
    if name not in AVAILABLE_METRICS:
        close = difflib.get_close_matches(name, AVAILABLE_METRICS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown metric {name!r}{hint}; available: {', '.join(AVAILABLE_METRICS)}")
    return METRICS_DIR / name


def load_metric(name: str, config_name: str | None = None, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the local module `name` with an optional config (e.g. "multiclass")."""
    return evaluate.load(str(metric_path(name)), config_name, **kwargs)


__all__ = ["AVAILABLE_METRICS", "load_metric", "metric_path"]
