"""Training checkpoints with Accelerate: every N steps, keep the last K, verified resumption.

Layout under `output_dir`:
    checkpoints/step_<n>/              `accelerator.save_state` + `trainer_state.json` + `checkpoint_complete.json`
    checkpoints/nonfinite_step_<n>/    the last finite state when step n produced a NaN/inf (`step_loop`; never
                                       rotated or picked by `latest`; resume from it by path)
A checkpoint is written to a staging folder unique to the run (`cleft_hf.atomic_folder`), completed by its
marker (written last, see `checkpoint_files`) and renamed into place; rotation renames old checkpoints to a trash
name before deleting them, so a folder without its marker never counts. Renames and rotation run on the main
process: `output_dir` must be on a filesystem shared by all processes (as with `accelerator.save_state` itself).
Accelerate's own rotation (`ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=K)`) is not used:
it writes in place, deletes file by file (`shutil.rmtree`) before the new save, and resumes from the highest
number whether complete or not. Which arguments may change on resume: `resume`.
"""

from __future__ import annotations

from collections.abc import Callable
import errno
import json
import logging
import os
from pathlib import Path
import re
import shutil
from typing import Any

from accelerate.utils import DistributedType, broadcast_object_list, gather_object
import torch

from ..atomic_folder import discard_folder, publish_folder, remove_leftovers, staging_path, unique_tag
from .checkpoint_files import (
    COMPLETE_MARKER,
    TRAINER_STATE_FILE,
    CheckpointError,
    is_complete,
    rng_states_restored,
    verify_checkpoint,
    write_marker,
)

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoints_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIRNAME


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete periodic checkpoints `(step, path)` under `output_dir/checkpoints`, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and is_complete(path):
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
    """`None`/"" -> None; "latest" -> newest complete checkpoint of `output_dir` (None if none yet); else a path."""
    if resume_from_checkpoint is None or str(resume_from_checkpoint).strip() in ("", "none", "None"):
        return None
    if str(resume_from_checkpoint) == "latest":
        checkpoints = list_checkpoints(output_dir)
        root = checkpoints_root(output_dir)
        complete = {path for _, path in checkpoints}
        unmarked = sorted(p.name for p in root.glob("step_*") if p.is_dir() and p not in complete)
        if unmarked:
            logger.warning(
                "ignoring checkpoints without %s (unfinished, or written by an older version): %s",
                COMPLETE_MARKER,
                ", ".join(unmarked),
            )
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


def any_process(accelerator, flag: bool) -> bool:
    """`flag` OR-ed over all processes (one scalar all-reduce; also a barrier)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MB" if n_bytes >= 2**20 / 10 else f"{n_bytes / 1024:.0f} kB"


class CheckpointManager:
    """Periodic `accelerator.save_state` with rotation, and verified resumption.

    Args:
        accelerator: the run's `accelerate.Accelerator` (models and optimisers prepared).
        output_dir: run folder; checkpoints go to `output_dir/checkpoints/step_<n>`. The caller holds its lock
            (`cleft_hf.run_lock.RunLock`), so leftovers of killed runs in it can be removed here.
        save_every: save when `step % save_every == 0` (optimiser steps); 0 disables periodic saves.
        keep_last: number of periodic checkpoints kept (older ones deleted); <= 0 keeps all.
    All methods must be called on every process (they contain collectives).
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
                logger.warning("removed the unfinished checkpoint folder %s of a killed run", stale)
        accelerator.wait_for_everyone()

    def should_save(self, step: int) -> bool:
        return self.save_every > 0 and step > 0 and step % self.save_every == 0

    def _run_everywhere(self, action: Callable[[], None], final: Path) -> None:
        """Run `action`; if it fails on any process, remove the staging folder and raise on every process."""
        error = None
        try:
            action()
        except Exception as caught:  # turned into one line below when it is a full or read-only disk
            error = caught
        if any_process(self.accelerator, error is not None):
            if self.accelerator.is_main_process:
                shutil.rmtree(staging_path(final, self.tag), ignore_errors=True)
            raise self._save_error(error, final) from (None if error is None else error)

    def save(self, step: int, extra_state: dict[str, Any] | None = None, name: str | None = None) -> Path:
        """Save the full training state at `step` (plus JSON-serialisable `extra_state`) and rotate."""
        final = self.root / (name or f"step_{step}")
        staging = staging_path(final, self.tag)
        main = self.accelerator.is_main_process
        self._run_everywhere(lambda: staging.mkdir(parents=True, exist_ok=True) if main else None, final)

        def write_state() -> None:
            self.accelerator.save_state(str(staging))
            if main:
                state = {**(extra_state or {}), "step": int(step)}
                (staging / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")

        self._run_everywhere(write_state, final)

        def complete() -> None:
            if main:
                write_marker(staging)
                publish_folder(staging, final)
                if name is None:
                    self._rotate()
                logger.info("saved training state of step %d to %s", step, final)

        self._run_everywhere(complete, final)
        return final

    def _state_bytes(self) -> int:
        """Size of a checkpoint: the newest one on disk, else the model and optimiser tensors in memory."""
        saved = list_checkpoints(self.output_dir)
        if saved:
            return sum(p.stat().st_size for p in saved[-1][1].iterdir() if p.is_file())
        total = sum(t.numel() * t.element_size() for m in self.accelerator._models for t in m.state_dict().values())
        for optimizer in self.accelerator._optimizers:
            for values in optimizer.state_dict()["state"].values():
                total += sum(v.numel() * v.element_size() for v in values.values() if torch.is_tensor(v))
        return total

    def _save_error(self, error: Exception | None, final: Path) -> Exception:
        if error is None:
            return CheckpointError(f"saving {final} failed on another process (see its message); nothing was kept")
        try:
            free = shutil.disk_usage(self.root if self.root.is_dir() else self.output_dir).free
        except OSError:
            free = None
        needed = self._state_bytes()
        code = getattr(error, "errno", None)
        if code == errno.ENOSPC or (free is not None and free < 1.1 * needed):
            have = f", {_size(free)} free" if free is not None else ""
            return CheckpointError(
                f"no space left on {self.root}: a checkpoint needs ~{_size(needed)}{have}; "
                "the unfinished checkpoint was removed. Free space or use another output_dir"
            )
        if code in (errno.EROFS, errno.EACCES, errno.EPERM):
            return CheckpointError(
                f"cannot write checkpoints to {self.root}: {error.strerror}; use another output_dir"
            )
        return error

    def _rotate(self) -> None:
        if self.keep_last <= 0:
            return
        for _, path in list_checkpoints(self.output_dir)[: -self.keep_last]:
            discard_folder(path)
            logger.info("deleted old checkpoint %s (keep_last=%d)", path, self.keep_last)

    def resume(self, resume_from_checkpoint: str | os.PathLike | None, allow_inexact: bool = False) -> dict[str, Any]:
        """Load the state named by `latest` / a path (see `resolve_resume_checkpoint`); returns the trainer
        state ({"step": 0} when starting fresh). Every file is checked first (`verify_checkpoint`): a file that
        cannot be restored safely and exactly stops the run with one line naming it; with `allow_inexact`,
        missing or broken RNG states only warn. The caller skips the batches already seen."""
        path = resolve_resume_checkpoint(resume_from_checkpoint, self.output_dir)
        if path is None:
            return {"step": 0}
        accelerator = self.accelerator
        sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        warnings: list[str] = []
        try:
            state = verify_checkpoint(path, accelerator.process_index, sharded, allow_inexact, warnings.append)
            problem = None
        except CheckpointError as error:
            state, problem = None, str(error)
        problems = gather_object([problem]) if accelerator.num_processes > 1 else [problem]
        if any(problems):
            raise CheckpointError(next(p for p in problems if p))
        for message in warnings:
            logger.warning(message)
        accelerator.load_state(str(path))
        if not warnings and not rng_states_restored(path, accelerator.process_index):
            message = f"the random states of {path} could not be restored"
            if not allow_inexact:
                raise CheckpointError(f"{message}; pass --allow_inexact_resume true to continue anyway (not exact)")
            logger.warning("%s: resuming WITHOUT them (not exact)", message)
        logger.info("resumed from %s at step %d", path, state["step"])
        return state


__all__ = [
    "CHECKPOINTS_DIRNAME",
    "CheckpointManager",
    "any_process",
    "checkpoints_root",
    "list_checkpoints",
    "read_trainer_state",
    "resolve_resume_checkpoint",
]
