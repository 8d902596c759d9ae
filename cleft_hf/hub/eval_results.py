"""A model's evaluation for its card: results.json read, one Hub `EvalResult` per evaluation record (the card's
model-index), and the Markdown table of the records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from ..data.registry import DATASET_REGISTRY
from ..evaluation.report import MetricRecord, metric_records

logger = logging.getLogger(__name__)

NOT_EVALUATED = "not evaluated"
DIGITS = 4  # metric values in the card and its model-index
# Record task -> (Hub task type, task name); record metric -> (Hub metric type, metric args).
HUB_TASKS = {
    "zero_shot": ("zero-shot-image-classification", "Zero-shot image classification"),
    "linear_probe": ("image-classification", "Linear probe on frozen image features"),
    "retrieval": ("retrieval", "Image-text retrieval"),
}
HUB_METRICS = {
    "accuracy": ("accuracy", None),
    "balanced_accuracy": ("balanced_accuracy", None),
    "auroc": ("roc_auc", {"average": "macro", "multi_class": "ovr"}),
    "macro_f1": ("f1", {"average": "macro"}),
    "recall": ("recall", None),
}


def load_results(results: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """results.json as a dict; None when not given or when the file does not exist (the card says
    "not evaluated"). A file that is not a JSON object is an error naming it."""
    if results is None:
        return None
    if isinstance(results, Mapping):
        return dict(results)
    path = Path(results)
    if not path.is_file():
        logger.warning("results file %s not found: the model card will say the model was %s", path, NOT_EVALUATED)
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"results file {path} is not valid JSON: {error}") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"results file {path} must hold a JSON object, got {type(loaded).__name__}")
    return loaded


def dataset_display_name(dataset: Any) -> Any:
    """The registry's display name of a dataset name ("chexpert" -> "CheXpert"); anything else as it is."""
    spec = DATASET_REGISTRY.get(dataset) if isinstance(dataset, str) else None
    return spec.display_name if spec is not None else dataset


def _dataset_of(results: Mapping[str, Any]) -> str:
    dataset = results.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError("results has metrics but no 'dataset' field (a non-empty string) to report them against")
    return dataset


def build_eval_results(results: Mapping[str, Any]) -> list[EvalResult]:
    """One Hub `EvalResult` per finite record of `results`, under its task, value rounded to `DIGITS`."""
    records = [r for r in metric_records(results) if math.isfinite(r.value)]
    if not records:
        return []
    dataset = _dataset_of(results)
    split = results.get("split") if isinstance(results.get("split"), str) else None
    task = results.get("task") if isinstance(results.get("task"), str) else None
    evals = []
    for record in records:
        task_type, task_name = HUB_TASKS[record.task]
        metric_type, metric_args = HUB_METRICS[record.metric]
        evals.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=dataset,
                dataset_name=dataset_display_name(dataset),
                dataset_config=task,
                dataset_split=split,
                metric_type=metric_type,
                metric_value=round(record.value, DIGITS),
                metric_name=record.label,
                metric_args={**(metric_args or {}), **record.setting},
            )
        )
    return evals


def evaluation_table(records: Sequence[MetricRecord]) -> str:
    """Markdown table `| task | result | value |` of the records (values rounded to `DIGITS`)."""
    lines = ["| task | result | value |", "|---|---|---:|"]
    lines += [f"| {HUB_TASKS[r.task][1]} | {r.label} | {r.display_value(DIGITS)} |" for r in records]
    return "\n".join(lines)


__all__ = [
    "NOT_EVALUATED",
    "build_eval_results",
    "dataset_display_name",
    "evaluation_table",
    "load_results",
]
