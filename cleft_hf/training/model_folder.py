"""The model folders a run writes (`output_dir/model` at the end, `output_dir/best_model` with `save_best`):
model weights, processor and `training_log.json`, each folder written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate.utils import broadcast_object_list

from ..model_folder_write import ModelFolderWriteError, tensor_bytes, write_model_folder_safely
from ..training_log import write_training_log

if TYPE_CHECKING:
    from .run_state import RunState


def save_pretrained_atomic(output_path: str | os.PathLike, *savables: Any, needed_bytes: int = 0) -> Path:
    """Write a model folder atomically: everything goes to a staging folder that is renamed into place.

    `savables` are objects with `save_pretrained(path)` (model, processor) or callables `fn(path)` (e.g. a
    closure calling `model.save_pretrained(path, state_dict=accelerator.get_state_dict(model))` for sharded
    models). If any of them raises, the staging folder is removed and an existing `output_path` is untouched; a
    full or read-only disk (free space below ~`needed_bytes` checked first) is one-line `ModelFolderWriteError`
    (`cleft_hf.model_folder_write`). Call on the main process only.
    """
    return write_model_folder_safely(output_path, savables, needed_bytes)


def save_model_folder(run: RunState, folder: str | os.PathLike) -> Path:
    """Write `folder` (the run's model, processor and training log) atomically; call on every process: the
    state dict is gathered on every rank (FSDP / ZeRO-3 shards) and the log's counts are collective, rank 0
    writes."""
    accelerator = run.accelerator
    state_dict = accelerator.get_state_dict(run.model)  # on every rank: gathers FSDP / ZeRO-3 shards
    log = run.log.entries()  # collective (skipped-image count)
    failure = [None]
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(run.model)
        try:
            save_pretrained_atomic(
                folder,
                lambda target: unwrapped.save_pretrained(target, state_dict=state_dict),
                run.processor,
                lambda target: write_training_log(target, log),
                needed_bytes=tensor_bytes(state_dict),
            )
        except ModelFolderWriteError as error:  # full / read-only disk: one line, raised on every process
            failure = [str(error)]
    if accelerator.num_processes > 1:
        broadcast_object_list(failure)
    if failure[0] is not None:
        raise ModelFolderWriteError(failure[0])
    accelerator.wait_for_everyone()
    return Path(folder)


__all__ = ["save_model_folder", "save_pretrained_atomic"]
