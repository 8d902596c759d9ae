"""The resume policy: which run arguments may change when a run resumes from a checkpoint, and which may not."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from .checkpoint_files import CheckpointError
from .checkpointing import CheckpointManager
from .optim import position_schedule

logger = logging.getLogger(__name__)

# Arguments that may change when resuming (applied from the new values); any other change is refused.
RESUME_CHANGEABLE = (
    "learning_rate",
    "max_steps",
    "warmup_steps",
    "lr_scheduler",
    "min_lr_ratio",
    "max_grad_norm",
    "log_every",
    "save_every",
    "keep_last",
    "report_to",
    "resume_from_checkpoint",
    "allow_inexact_resume",
    "output_dir",
    "data_root",
    "dataloader_num_workers",
    "push_to_hub",
    "hub_model_id",
    "eval_every",
    "save_best",
)


def run_arguments(args: Any) -> dict[str, Any]:
    """The run's arguments as JSON values (stored in every checkpoint, compared on resume)."""
    return json.loads(json.dumps(dataclasses.asdict(args), default=str))


def compare_arguments(saved: dict[str, Any] | None, current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Fields whose value differs between a checkpoint's run arguments and the resumed run's: `(changeable,
    refused)` (see `RESUME_CHANGEABLE`). Fields only one side has are ignored (added or removed options)."""
    if not saved:
        return [], []
    current = json.loads(json.dumps(current, default=str))
    differing = sorted(k for k in saved.keys() & current.keys() if saved[k] != current[k])
    return [k for k in differing if k in RESUME_CHANGEABLE], [k for k in differing if k not in RESUME_CHANGEABLE]


def resume_training(args: Any, checkpoints: CheckpointManager, optimizer, scheduler) -> dict[str, Any]:
    """Restore the checkpoint named by `args.resume_from_checkpoint` and apply the arguments that may change on
    resume (`RESUME_CHANGEABLE`, with a warning); other changed arguments are refused (one line). Returns the
    trainer state (`{"step": 0}` for a fresh start)."""
    state = checkpoints.resume(args.resume_from_checkpoint, getattr(args, "allow_inexact_resume", False))
    start = int(state["step"])
    if start:
        current = run_arguments(args)
        changed, refused = compare_arguments(state.get("arguments"), current)
        saved = state["arguments"] if changed or refused else {}
        if refused:
            listed = ", ".join(f"{k} ({saved[k]!r} -> {current[k]!r})" for k in refused)
            raise CheckpointError(
                f"resume_from_checkpoint: the checkpoint was trained with other values of {listed}; "
                "these cannot change on resume: restore them or start a new output_dir"
            )
        if changed:
            logger.warning(
                "resuming with changed %s", ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed)
            )
    position_schedule(optimizer, scheduler, args.learning_rate, start)
    return state


__all__ = ["RESUME_CHANGEABLE", "compare_arguments", "resume_training", "run_arguments"]
