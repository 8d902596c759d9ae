"""The state of one stage run, built once by the runner and read by the step loop and the model-folder writer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelerate import Accelerator
import torch

from .batches import SkippedImages
from .checkpointing import CheckpointManager
from .run_log import TrainingLog
from .validation import PeriodicValidation

if TYPE_CHECKING:
    from .runner import Stage


@dataclass
class RunState:
    """Everything a stage run works with: the prepared model, optimiser and data, and where it records."""

    args: Any  # the stage's run arguments (PretrainArguments / PromptTuneArguments)
    stage: Stage
    accelerator: Accelerator
    model: torch.nn.Module  # prepared (possibly wrapped)
    processor: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Iterator[dict[str, Any]]  # endless, from the resumed position on
    checkpoints: CheckpointManager
    log: TrainingLog
    skipped: SkippedImages
    validation: PeriodicValidation | None  # None without eval_every
    arguments: dict[str, Any]  # the run arguments as JSON values (kept in checkpoints, compared on resume)
    start: int  # optimiser steps already done (resume)

    def trainer_state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides accelerate's state (a collective: call on every process)."""
        return {**self.log.state(), "arguments": self.arguments}


__all__ = ["RunState"]
