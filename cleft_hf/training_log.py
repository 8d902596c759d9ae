"""`training_log.json`: what the training of a model recorded in its model folder (read by evaluation and cards).

    {"<stage name>": [[step, loss], ...],                        one loss curve per stage, in training order
     "skipped_images": {"<stage name>": {"count", "files"}},     undecodable images dropped (skip_bad)
     "recipes": {"<stage name>": {"stage": title, ...}},         each stage's run arguments (the card's recipe)
     "validation": {"<stage name>": {<metric>: [[step, value], ...], "best": {"metric", "step", "value"}}}}

A later stage's log starts from the earlier model's (stage 2 extends stage 1's). Written by the trainer
(`cleft_hf.training.run_log.TrainingLog`), read here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TRAINING_LOG = "training_log.json"


def read_training_log(model_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The training log of a local model folder; {} when there is none (a Hub id, a model built in memory)."""
    path = Path(str(model_dir or "")) / TRAINING_LOG
    if not model_dir or not path.is_file():
        return {}
    logged = json.loads(path.read_text(encoding="utf-8"))
    return logged if isinstance(logged, dict) else {}


def write_training_log(model_dir: str | os.PathLike, log: dict[str, Any]) -> Path:
    """Write `log` as the training log of `model_dir` (inside the folder's atomic staging: no partial file)."""
    path = Path(model_dir) / TRAINING_LOG
    path.write_text(json.dumps(log, indent=1), encoding="utf-8")
    return path


def loss_curves(log: dict[str, Any]) -> dict[str, list]:
    """`{stage name: [[step, loss], ...]}` of a training log (its other entries left out)."""
    return {name: points for name, points in log.items() if isinstance(points, list)}


__all__ = ["TRAINING_LOG", "loss_curves", "read_training_log", "write_training_log"]
