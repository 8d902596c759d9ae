"""Training checkpoints with Accelerate (every N steps, keep the last K, resume), atomic final save, NaN stop.

Layout under `output_dir`:
    checkpoints/step_<n>/              `accelerator.save_state` + `trainer_state.json` ({"step": n, ...})
    checkpoints/nonfinite_step_<n>/    state saved when the loss became NaN/inf (never rotated or resumed)
A checkpoint is written to a hidden staging folder (`cleft_hf.atomic_folder`) and renamed when complete, so
`latest` never picks a half-written folder; old ones are renamed to a trash name before they are deleted. Renames and rotation run on the main process: `output_dir` must be on a filesystem
shared by all processes (as with `accelerator.save_state` itself).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import re
from typing import Any

import torch

from accelerate.utils import broadcast_object_list

from ..atomic_folder import atomic_folder, discard_folder, publish_folder, remove_leftovers, staging_path, unique_tag

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf at `step`; the training state of that step was saved to `state_dir`."""

    def __init__(self, step: int, loss_value: float, state_dir: Path | None):
        self.step, self.loss_value, self.state_dir = step, loss_value, state_dir
        where = f"; training state saved to {state_dir}" if state_dir else ""
        super().__init__(
            f"non-finite loss at step {step} (on this process: {loss_value}){where}. Lower the learning rate or "
            "check the batch, then restart with --resume_from_checkpoint latest"
        )


def checkpoints_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIRNAME


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints `(step, path)` under `output_dir/checkpoints`, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_trainer_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """The `trainer_state.json` of a checkpoint (always has "step")."""
    state_file = Path(checkpoint_dir) / TRAINER_STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is not a training checkpoint: {TRAINER_STATE_FILE} is missing")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if not isinstance(state.get("step"), int):
        raise ValueError(f"{state_file} has no integer 'step'")
    return state


def resolve_resume_checkpoint(
    resume_from_checkpoint: str | os.PathLike | None, output_dir: str | os.PathLike
) -> Path | None:
    """`None`/"" -> None; "latest" -> newest checkpoint of `output_dir` (None if there is none yet); else a path."""
    if resume_from_checkpoint is None or str(resume_from_checkpoint).strip() in ("", "none", "None"):
        return None
    if str(resume_from_checkpoint) == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            root = checkpoints_root(output_dir)
            logger.info("resume_from_checkpoint=latest: no checkpoint in %s yet, starting from step 0", root)
            return None
        return checkpoints[-1][1]
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: checkpoint folder {path} does not exist")
    read_trainer_state(path)
    return path


def save_pretrained_atomic(output_path: str | os.PathLike, *savables: Any) -> Path:
    """Write a final model folder atomically: everything goes to a temp folder that is renamed into place.

    `savables` are objects with `save_pretrained(path)` (model, processor) or callables `fn(path)` (e.g. a
    closure calling `model.save_pretrained(path, state_dict=accelerator.get_state_dict(model))` for sharded
    models). If any of them raises, the temp folder is removed and an existing `output_path` is untouched.
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


class CheckpointManager:
    """Periodic `accelerator.save_state` with rotation, resumption and the non-finite-loss stop.

    Args:
        accelerator: the run's `accelerate.Accelerator` (models/optimisers/schedulers prepared or registered).
        output_dir: run folder; checkpoints go to `output_dir/checkpoints/step_<n>`.
        save_every: save when `step % save_every == 0` (optimiser steps); 0 disables periodic saves.
        keep_last: number of periodic checkpoints kept (older ones deleted); <= 0 keeps all.
    All methods must be called on every process (they contain collectives and barriers).
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike, save_every: int, keep_last: int = 3):
        if save_every < 0:
            raise ValueError(f"save_every must be >= 0, got {save_every}")
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.root = checkpoints_root(output_dir)
        self.save_every = save_every
        self.keep_last = keep_last
        tag = [unique_tag()]  # staging names unique per run, the same on every process
        if accelerator.num_processes > 1:
            broadcast_object_list(tag)
        self.tag = tag[0]
        if accelerator.is_main_process:
            for stale in remove_leftovers(self.root):
                logger.warning("removed incomplete checkpoint folder %s", stale)
        accelerator.wait_for_everyone()

    def should_save(self, step: int) -> bool:
        return self.save_every > 0 and step > 0 and step % self.save_every == 0

    def maybe_save(self, step: int, extra_state: dict[str, Any] | None = None) -> Path | None:
        """Save if `step` is a multiple of `save_every`; returns the checkpoint folder or None."""
        return self.save(step, extra_state) if self.should_save(step) else None

    def save(self, step: int, extra_state: dict[str, Any] | None = None, name: str | None = None) -> Path:
        """Save the full training state at `step` (plus JSON-serialisable `extra_state`) and rotate."""
        final = self.root / (name or f"step_{step}")
        staging = staging_path(final, self.tag)
        if self.accelerator.is_main_process:
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(staging))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            state = {**(extra_state or {}), "step": int(step)}
            (staging / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
            publish_folder(staging, final)
            if name is None:
                self._rotate()
            logger.info("saved training state of step %d to %s", step, final)
        self.accelerator.wait_for_everyone()
        return final

    def _rotate(self) -> None:
        if self.keep_last <= 0:
            return
        for _, path in list_checkpoints(self.output_dir)[: -self.keep_last]:
            discard_folder(path)
            logger.info("deleted old checkpoint %s (keep_last=%d)", path, self.keep_last)

    def resume(self, resume_from_checkpoint: str | os.PathLike | None) -> dict[str, Any]:
        """Load the state named by `latest` / a path (see `resolve_resume_checkpoint`); returns the trainer
        state ({"step": 0} when starting fresh). The caller skips the batches already seen."""
        path = resolve_resume_checkpoint(resume_from_checkpoint, self.output_dir)
        if path is None:
            return {"step": 0}
        self.accelerator.load_state(str(path))
        state = read_trainer_state(path)
        logger.info("resumed from %s at step %d", path, state["step"])
        return state

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        """Raise `NonFiniteLossError` if the loss is NaN/inf on ANY process, after saving the state.

        Call before `accelerator.backward(loss)`: the saved state is then the (finite) one that produced the
        bad loss, in `checkpoints/nonfinite_step_<step>`. Costs one scalar all-reduce and a device sync.
        """
        bad = (~torch.isfinite(loss.detach())).any().to(torch.float32).reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item() == 0:
            return
        state_dir = self.save(step, name=f"nonfinite_step_{step}")
        raise NonFiniteLossError(step, float(loss.detach().float().sum()), state_dir)


__all__ = [
    "CheckpointManager",
    "NonFiniteLossError",
    "checkpoints_root",
    "list_checkpoints",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "save_pretrained_atomic",
]
