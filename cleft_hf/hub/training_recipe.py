"""The recipe section of the model card: each training stage's run arguments as (setting, value) rows, without
credentials, Hub plumbing, bookkeeping or local paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json
import re
from typing import Any

from ..training_log import read_training_log
from .model_facts import is_local_path

# Run-argument fields that never go into a public card: Hub plumbing, bookkeeping, bulky curves; and credentials.
_HIDDEN_SUMMARY_KEYS = {
    "push_to_hub",
    "hub_model_id",
    "loss_curve",
    "config",
    "output_dir",
    "logging_dir",
    "resume_from_checkpoint",
    "dataloader_num_workers",
    "save_every",
    "keep_last",
    "log_every",
    "report_to",
    "data_root",
    "model_name_or_path",
    "stage",
}
_CREDENTIAL_KEY = re.compile(r"(?:^|_)(?:token|api_key|password|secret)$")


def _show_summary_value(value: Any) -> str | None:
    """A run setting as card text; local paths (data folders, local models) and bulky values are left out."""
    if value is None or isinstance(value, Mapping) and not value:
        return None
    if isinstance(value, str):
        return None if not value or is_local_path(value) else f"`{value}`"
    if isinstance(value, (list, tuple)):
        if len(value) > 20 or any(isinstance(v, (list, tuple, Mapping)) for v in value):
            return None
        return ", ".join(str(v) for v in value) or None
    if isinstance(value, Mapping):  # e.g. model_config: its local paths left out too
        kept = {k: v for k, v in value.items() if not (isinstance(v, str) and is_local_path(v))}
        return f"`{json.dumps(kept, sort_keys=True, default=str)}`" if kept else None
    return str(value)


def training_rows(summary: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(setting, value) rows of a training summary / run arguments, without credentials or Hub fields."""
    rows = []
    for key, value in (summary or {}).items():
        if key in _HIDDEN_SUMMARY_KEYS or key.startswith("hub_") or _CREDENTIAL_KEY.search(key.lower()):
            continue
        shown = _show_summary_value(value)
        if shown is not None:
            rows.append((key, shown))
    return rows


def arguments_summary(args: Any) -> dict[str, Any]:
    """Run arguments (dataclass, argparse namespace or mapping) as a plain dict for the card's recipe table (a
    training run records them with their stage's title, see `cleft_hf.training.run_log`)."""
    if dataclasses.is_dataclass(args) and not isinstance(args, type):
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}
    return dict(args) if isinstance(args, Mapping) else dict(vars(args))


def training_stages(summary: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """`[{"title", "rows"}]`, one per stage: `summary` is one stage's run arguments or a list of them."""
    stages = [summary] if isinstance(summary, Mapping) else list(summary or [])
    titled = []
    for index, stage in enumerate(stages, start=1):
        title = stage.get("stage")
        titled.append({"title": f"Stage {title}" if title else f"Stage {index}", "rows": training_rows(stage)})
    return [stage for stage in titled if stage["rows"]]


def recorded_recipes(model: Any) -> list[dict[str, Any]]:
    """The run arguments of every stage that produced `model`, in order, as its training wrote them into the
    model folder's `training_log.json` under "recipes" (empty when the model was not loaded from a folder)."""
    recipes = read_training_log(getattr(model, "name_or_path", None)).get("recipes")
    return [recipe for recipe in recipes.values() if isinstance(recipe, Mapping)] if isinstance(recipes, dict) else []


__all__ = ["arguments_summary", "recorded_recipes", "training_rows", "training_stages"]
