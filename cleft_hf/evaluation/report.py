"""Evaluation results as records -> `results.json` and `results.md` (the model card reads the same records).

results.json: `{"model", "dataset", "task", "split", "class_names", "n_images", ["n_train_images"], "metrics": [...]}`
where every metric is a record `{"task", "metric", "classes", "setting", "value"}`:

- task: `zero_shot` (setting `{"prompts": "hand" | "learned"}`, plus `prompt_templates` for an ensemble and
  `negative_template` for positive / negative pairs), `linear_probe` (`{"label_fraction": 0.1}`) or
  `retrieval` (`{"k": 5, "direction": "image_to_text" | "text_to_image" | "mean"}`);
- metric: `accuracy`, `auroc` (macro one-vs-rest), `macro_f1` or `recall` (retrieval);
- classes: the class names scored (None for retrieval); value: a float in [0, 1] (NaN when undefined);
- ci_low, ci_high (zero-shot, when bootstrapped): the 95 % bootstrap interval of the value.

`zero_shot_difference` (with learned prompts and the bootstrap): per metric `{"value", "ci_low", "ci_high"}` of
learned - hand prompts, the paired bootstrap interval (same resampled images for both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
import json
import math
from pathlib import Path
from typing import Any

from ..atomic_folder import write_text_atomically

TASKS = ("zero_shot", "linear_probe", "retrieval")
METRIC_NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "auroc": "AUROC",
    "macro_f1": "macro F1",
    "recall": "recall",
}
DIRECTIONS = {"image_to_text": "image to text", "text_to_image": "text to image", "mean": "mean of both directions"}


@dataclass(frozen=True)
class MetricRecord:
    """One evaluation result: which task, which metric, over which classes, in which setting, its value."""

    task: str
    metric: str
    value: float
    classes: tuple[str, ...] | None = None
    setting: Mapping[str, Any] = field(default_factory=dict)
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"metric record task must be one of {TASKS}, got {self.task!r}")
        if self.metric not in METRIC_NAMES:
            raise ValueError(f"metric record metric must be one of {tuple(METRIC_NAMES)}, got {self.metric!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "classes", tuple(self.classes) if self.classes is not None else None)
        object.__setattr__(self, "setting", dict(self.setting))

    @property
    def label(self) -> str:
        """Words for tables: "zero-shot accuracy, hand prompts", "linear probe AUROC, 10 % of training labels"..."""
        name = METRIC_NAMES[self.metric]
        if self.task == "zero_shot":
            templates = len(self.setting.get("prompt_templates") or ())
            ensemble = f" ({templates} templates)" if templates else ""
            if self.setting.get("negative_template"):
                ensemble += f" vs '{self.setting['negative_template']}' (pairs)"
            return f"zero-shot {name}, {self.setting['prompts']} prompts{ensemble}"
        if self.task == "linear_probe":
            return f"linear probe {name}, {self.setting['label_fraction'] * 100:g} % of training labels"
        return f"retrieval R@{self.setting['k']} ({DIRECTIONS[self.setting['direction']]})"

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["classes"] = list(self.classes) if self.classes is not None else None
        interval = ("ci_low", "ci_high") if self.ci_low is not None else ()
        keys = ("task", "metric", "classes", "setting", "value", *interval)
        return {key: record[key] for key in keys}

    def display_value(self, digits: int = 4) -> str:
        """The value, with its bootstrap interval when it has one: "0.8125 [0.7500, 0.8750]"."""
        if self.ci_low is None:
            return format_value(self.value, digits)
        low, high = format_value(self.ci_low, digits), format_value(self.ci_high, digits)
        return f"{format_value(self.value, digits)} [{low}, {high}]"

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> MetricRecord:
        try:
            return cls(
                record["task"],
                record["metric"],
                record["value"],
                record.get("classes"),
                record.get("setting") or {},
                record.get("ci_low"),
                record.get("ci_high"),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"bad metric record {dict(record)!r}: {error}") from error


def metric_records(results: Mapping[str, Any] | None) -> list[MetricRecord]:
    """The records of a results dict (results.json loaded), in file order."""
    records = (results or {}).get("metrics") or []
    if not isinstance(records, list):
        raise ValueError(f"results 'metrics' must be a list of records, got {type(records).__name__}")
    return [MetricRecord.from_dict(record) for record in records]


def format_value(value: float, digits: int = 4) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(results: Mapping[str, Any]) -> str:
    """Markdown table `| result | value |` of the records of `results` (values to 4 decimals)."""
    lines = ["| result | value |", "|---|---:|"]
    lines += [f"| {record.label} | {record.display_value()} |" for record in metric_records(results)]
    for metric, diff in (results.get("zero_shot_difference") or {}).items():
        low, high = format_value(diff["ci_low"]), format_value(diff["ci_high"])
        lines.append(
            f"| zero-shot {METRIC_NAMES[metric]}, learned - hand prompts (paired) | "
            f"{format_value(diff['value'])} [{low}, {high}] |"
        )
    return "\n".join(lines)


def write_results(results: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.md`, then `results.json` (each atomically); returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "results.json", output_dir / "results.md"
    header = (
        f"Evaluation of `{results.get('model', '?')}` on {results.get('dataset', '?')} "
        f"({results.get('split', '?')}, {results.get('n_images', '?')} images)\n\n"
    )
    note = "\nIn brackets: 95 % bootstrap intervals (images resampled).\n" if results.get("bootstrap") else ""
    write_text_atomically(md_path, header + markdown_table(results) + "\n" + note)
    write_text_atomically(json_path, json.dumps(results, indent=2))  # last: a results.json is always complete
    return json_path, md_path


__all__ = ["MetricRecord", "format_value", "markdown_table", "metric_records", "write_results"]
