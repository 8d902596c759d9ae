"""The end of a run: the final model folder is written to its last byte, and nothing trained is lost if it fails.

    with SignalsDeferred() as deferred:                       # SIGTERM/SIGINT: finish the save first
        final_dir = save_final_or_keep_state(lambda: save_model_folder(run, out / "model"), checkpoints, max_steps, state)
    # leaving the block after a signal: SystemExit(128 + signal), the lock released by the caller's `finally`

- `SignalsDeferred`: a signal arriving while the final model is written no longer kills the process half-way
  (an empty `.model.partial-*` and the run lock left behind): the save completes, then the run exits with
  128 + signal number. A second signal of the same kind acts as usual (the default: the process ends; the
  partial folder is removed by the next run on that output_dir).
- `save_final_or_keep_state`: when the final model cannot be written (full or read-only disk,
  `ModelFolderWriteError`), the state of the last step is kept as a checkpoint if there is none yet (its save
  may fail too on a full disk), and the error says how to finish: free space, then the same command with
  `--resume_from_checkpoint latest` (from a checkpoint of the last step it only writes the model folder).
"""

from __future__ import annotations

from collections.abc import Callable
import logging
from pathlib import Path
import signal
import threading
from typing import Any

from ..model_folder_write import ModelFolderWriteError
from .checkpoint_files import CheckpointError
from .checkpointing import list_checkpoints
from .stop_signals import STOP_SIGNALS

logger = logging.getLogger(__name__)


class FinalSaveError(ModelFolderWriteError):
    """The final model folder could not be written; the message names the checkpoint kept and how to finish."""


class SignalsDeferred:
    """Context manager: SIGTERM/SIGINT received inside it are recorded and acted on when it ends (SystemExit
    128 + signal, after the block completed). Main thread only; elsewhere it does nothing."""

    def __init__(self, what: str = "the final model folder"):
        self.what, self.signum = what, None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        logger.warning(
            "received %s while writing %s: finishing it, then stopping", signal.Signals(signum).name, self.what
        )
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second one acts as usual

    def __enter__(self) -> SignalsDeferred:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self.signum is not None and kind is None:
            logger.warning(
                "stopped by %s after %s was written completely", signal.Signals(self.signum).name, self.what
            )
            raise SystemExit(128 + self.signum)


def save_final_or_keep_state(
    save: Callable[[], Path], checkpoints, step: int, extra_state: Callable[[], dict[str, Any]]
) -> Path:
    """`save()` (the final model folder); if it fails for lack of space or permission, keep the state of `step`
    as a checkpoint (unless the newest one is of `step`) and raise `FinalSaveError` saying how to finish.
    Call on every process (checkpoint saves are collective)."""
    try:
        return save()
    except ModelFolderWriteError as error:
        cause = error
    kept = list_checkpoints(checkpoints.output_dir)
    newest = kept[-1] if kept else None
    if newest is None or newest[0] < step:
        try:
            newest = (step, checkpoints.save(step, extra_state()))
        except CheckpointError as failed:  # e.g. no space for it either: the earlier checkpoint stays
            logger.warning("could not keep the state of step %d as a checkpoint either: %s", step, failed)
    if newest is None:
        advice = (
            "no checkpoint could be kept (save_every 0 and no room for one): free space and train again, "
            "with --save_every so that a checkpoint survives"
        )
    elif newest[0] == step:
        advice = (
            f"the trained state is kept in {newest[1]}: free space, then run the same command with "
            "--resume_from_checkpoint latest to write the model folder (no step is repeated)"
        )
    else:
        advice = (
            f"the last checkpoint is {newest[1]} (step {newest[0]} of {step}): free space, then run the same "
            f"command with --resume_from_checkpoint latest (repeats steps {newest[0] + 1}-{step})"
        )
    raise FinalSaveError(f"{' '.join(str(cause).split())}; {advice}") from cause


__all__ = ["FinalSaveError", "SignalsDeferred", "save_final_or_keep_state"]
