"""The one stage runner: both training stages (contrastive pretraining, prompt tuning) run through `run_stage`.

A stage says what is particular to it (`Stage`: model + processor + loader, the batch stream, the loss); the
runner does everything else in one order for both:

    accelerator -> arguments file -> stage.build -> optimiser/schedule + accelerator.prepare -> resume
    -> train_steps (accumulate, NaN stop, clip, step, schedule, log, checkpoint) -> final model folder
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator

from .checkpointing import CheckpointManager
from .config import save_arguments
from .loop import LossLog, batch_stream, make_accelerator, train_steps
from .optim import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)


class Stage(abc.ABC):
    """What one training stage adds to the runner. Subclasses set the class attributes and implement `build`
    and `loss`; `self.accelerator` is set by the runner before `build` is called."""

    name: str = "stage"  # key of the loss curve in training_log.json, progress-bar label
    project: str = "cleft"  # tracker project name
    arguments_file: str = "args.yaml"  # the run's arguments, written into output_dir
    previous_model: str | None = None  # model folder whose training_log.json this stage extends

    def __init__(self, args: Any):
        self.args = args
        self.accelerator: Accelerator | None = None

    @abc.abstractmethod
    def build(self) -> tuple[torch.nn.Module, Any, torch.utils.data.DataLoader]:
        """The model, its processor and the training DataLoader, not yet prepared."""

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The loss of one micro-batch; `model` is the prepared (possibly wrapped) model."""

    def batches(self, model: torch.nn.Module, loader, start_micro_step: int) -> Iterator[dict[str, Any]]:
        """Endless training batches from micro-batch `start_micro_step` on."""
        return batch_stream(loader, self.accelerator, start_micro_step)

    def set_train_mode(self, model: torch.nn.Module) -> None:
        model.train()

    def summary(self) -> dict[str, Any]:
        """Stage-specific entries of the summary `run_stage` returns."""
        return {}


def prepare_run(accelerator: Accelerator, args: Any, model, loader, project: str):
    """Optimiser (parameter groups) and schedule from `args`, `accelerator.prepare`, trackers.

    The scheduler stays out of `prepare` (it would step once per process) and is registered for checkpoints.
    Returns `(model, optimizer, scheduler, loader)`.
    """
    optimizer = build_optimizer(model, args.optimizer, args.learning_rate, args.weight_decay, args.betas, args.momentum)
    scheduler = build_scheduler(optimizer, args.warmup_steps, args.max_steps, args.lr_scheduler, args.min_lr_ratio)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)
    if args.trackers:
        accelerator.init_trackers(project, config={k: str(v) for k, v in vars(args).items()})
    return model, optimizer, scheduler, loader


def finish_run(accelerator: Accelerator, model, processor, log: LossLog, args: Any, stage: Stage) -> Path:
    """Write `output_dir/model` atomically (model, processor, training_log.json) and close the trackers."""
    from .checkpointing import save_pretrained_atomic

    final_dir = Path(args.output_dir) / "model"
    state_dict = accelerator.get_state_dict(model)  # on every rank: gathers FSDP / ZeRO-3 shards (rank 0 gets them)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)

        def save_model(folder: Path) -> None:
            unwrapped.save_pretrained(folder, state_dict=state_dict)

        save_pretrained_atomic(final_dir, save_model, processor, log.writer(stage.name, stage.previous_model))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final_dir


def run_stage(stage: Stage) -> dict[str, Any]:
    """Train `stage` and write `output_dir/model` (model + processor + training_log.json, atomically).

    Returns `{"model_dir", "steps", "loss_curve", **stage.summary()}`.
    """
    args = stage.args
    accelerator = stage.accelerator = make_accelerator(args)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_arguments(args, output_dir / stage.arguments_file)
    model, processor, loader = stage.build()
    model, optimizer, scheduler, loader = prepare_run(accelerator, args, model, loader, stage.project)

    checkpoints = CheckpointManager(accelerator, args.output_dir, args.save_every, args.keep_last)
    state = checkpoints.resume(args.resume_from_checkpoint)
    log = LossLog(accelerator, args.log_every)
    log.restore(state)
    start = int(state["step"])

    batches = stage.batches(model, loader, start * args.gradient_accumulation_steps)
    stage.set_train_mode(model)
    train_steps(accelerator, model, optimizer, scheduler, checkpoints, log, batches,
                lambda batch: stage.loss(model, batch), start=start, args=args, desc=stage.name)
    final_dir = finish_run(accelerator, model, processor, log, args, stage)
    return {"model_dir": str(final_dir), "steps": args.max_steps, "loss_curve": log.points, **stage.summary()}


__all__ = ["Stage", "finish_run", "prepare_run", "run_stage"]
