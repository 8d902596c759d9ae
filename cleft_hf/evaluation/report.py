"""results.json (flat: names -> numbers, plus dataset info) and its markdown table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRIC_LABELS = {
    "zero_shot_acc_hand_prompts": "zero-shot accuracy, hand prompts",
    "zero_shot_auroc_hand_prompts": "zero-shot AUROC, hand prompts",
    "zero_shot_macro_f1_hand_prompts": "zero-shot macro F1, hand prompts",
    "zero_shot_acc_learned_prompts": "zero-shot accuracy, learned prompts",
    "zero_shot_auroc_learned_prompts": "zero-shot AUROC, learned prompts",
    "zero_shot_macro_f1_learned_prompts": "zero-shot macro F1, learned prompts",
    "linear_probe_acc": "linear probe accuracy (100 % labels)",
    "retrieval_r_at_1": "retrieval R@1 (mean of both directions)",
    "retrieval_r_at_5": "retrieval R@5 (mean of both directions)",
    "retrieval_r_at_10": "retrieval R@10 (mean of both directions)",
}


def metric_items(results: dict[str, Any]) -> list[tuple[str, float]]:
    """The numeric metrics of `results`, known names first (in table order), then any others."""
    numeric = {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ("n_images", "n_train_images")}
    known = [(k, numeric.pop(k)) for k in METRIC_LABELS if k in numeric]
    return known + sorted(numeric.items())


def markdown_table(results: dict[str, Any]) -> str:
    """Two-column markdown table of every numeric metric in `results`."""
    lines = ["| metric | value |", "|---|---:|"]
    for key, value in metric_items(results):
        shown = "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"
        lines.append(f"| {METRIC_LABELS.get(key, key)} | {shown} |")
    return "\n".join(lines)


def write_results(results: dict[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` and `results.md`; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "results.json", output_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False), encoding="utf-8")
    header = f"Evaluation of `{results.get('model', '?')}` on {results.get('dataset', '?')} ({results.get('split', '?')}, " \
             f"{results.get('n_images', '?')} images)\n\n"
    md_path.write_text(header + markdown_table(results) + "\n", encoding="utf-8")
    return json_path, md_path
