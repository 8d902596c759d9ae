"""SIGTERM / SIGINT (cluster pre-emption, Ctrl-C) end a training run cleanly: the step in progress finishes, the
state is saved as a normal checkpoint (`--resume_from_checkpoint latest` picks it) and the run exits with
`TrainingInterrupted` (a `SystemExit` with status 128 + signal number, no traceback).

The final model save is covered too (`final_save.SignalsDeferred`): a signal then waits for the folder's last byte.
Exit status seen from outside (accelerate 1.16, `--quiet`): the training process exits 128 + signal; a one-process
`accelerate launch` whose training process was signalled exits 1 (any failure is 1 there); a launcher signalled
itself passes SIGTERM on, kills the training process 5 s later and exits 143 (send the signal to the training
process, `pkill -TERM -P <launcher pid>`, when a save takes longer). With `--multi_gpu`, torchrun forwards
SIGTERM to every worker and SIGKILLs them 30 s later. See the README.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(SystemExit):
    """The run stopped on a signal after saving its state (`code` = 128 + signal number)."""

    def __init__(self, signum: int, step: int, checkpoint):
        name = signal.Signals(signum).name
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(128 + signum)
        self.message = (
            f"stopped by {name} after step {step}; state saved to {checkpoint}: continue with "
            "--resume_from_checkpoint latest"
        )

    def __str__(self) -> str:
        return self.message


class StopSignals:
    """Context manager catching SIGTERM/SIGINT while training (main thread only; elsewhere it does nothing).

    `requested(accelerator)` says, identically on every process, whether any process received one (one scalar
    all-reduce when there are several). A second signal of the same kind is not caught: it acts as usual.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        logger.warning("received %s: saving the state after this step, then stopping", signal.Signals(signum).name)
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def requested(self, accelerator) -> int | None:
        """The signal number if any process was signalled, else None."""
        signum = self.signum or 0
        if accelerator.num_processes > 1:
            value = torch.tensor([signum], device=accelerator.device)
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            signum = int(value.item())
        return signum or None


__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted"]
