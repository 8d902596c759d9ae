"""The model folders a run writes (`output_dir/model` at the end, `output_dir/best_model` with `save_best`):
model weights, processor and `training_log.json`, each folder written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_folder import atomic_folder
from ..training_log import write_training_log

if TYPE_CHECKING:
    from .run_state import RunState


def save_pretrained_atomic(output_path: str | os.PathLike, *savables: Any) -> Path:
    """Write a model folder atomically: everything goes to a staging folder that is renamed into place.

    `savables` are objects with `save_pretrained(path)` (model, processor) or callables `fn(path)` (e.g. a
    closure calling `model.save_pretrained(path, state_dict=accelerator.get_state_dict(model))` for sharded
    models). If any of them raises, the staging folder is removed and an existing `output_path` is untouched.
    Call on the main process only.
    """
    if not savables:
        raise ValueError("save_pretrained_atomic needs at least one object to save")
    with atomic_folder(output_path) as staging:
        for savable in savables:
            if hasattr(savable, "save_pretrained"):
                savable.save_pretrained(staging)
            elif callable(savable):
                savable(staging)
            else:
                raise TypeError(f"cannot save {type(savable).__name__}: no save_pretrained and not callable")
    return Path(output_path)


def save_model_folder(run: RunState, folder: str | os.PathLike) -> Path:
    """Write `folder` (the run's model, processor and training log) atomically; call on every process: the
    state dict is gathered on every rank (FSDP / ZeRO-3 shards) and the log's counts are collective, rank 0
    writes."""
    accelerator = run.accelerator
    state_dict = accelerator.get_state_dict(run.model)  # on every rank: gathers FSDP / ZeRO-3 shards
    log = run.log.entries()  # collective (skipped-image count)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(run.model)
        save_pretrained_atomic(folder, lambda target: unwrapped.save_pretrained(target, state_dict=state_dict),
                               run.processor, lambda target: write_training_log(target, log))
    accelerator.wait_for_everyone()
    return Path(folder)


__all__ = ["save_model_folder", "save_pretrained_atomic"]
