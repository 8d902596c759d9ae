"""The one stage runner: both training stages (contrastive pretraining, prompt tuning) run through `run_stage`.

A stage says what is particular to it (`Stage`: model + processor + loader, the batch stream, the loss); the
runner does everything else in one order for both:

    accelerator -> output-folder lock -> arguments file -> stage.build -> optimiser/schedule + accelerator.prepare
    -> resume (verified files; changed arguments applied or refused) -> train_steps (accumulate, NaN stop, clip,
    step, schedule, log, validate, checkpoint, stop on SIGTERM/SIGINT) -> final model folder -> lock released
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list

from ..arguments import ConfigError
from ..modeling.quantization_cleft import fsdp2_refusal
from .checkpointing import CheckpointError, CheckpointManager, compare_arguments
from .config import save_arguments
from .loop import LossLog, SkippedImages, batch_stream, make_accelerator, train_steps
from .optim import build_optimizer, build_scheduler, position_schedule
from .run_lock import OutputDirInUseError, RunLock
from .validation import PeriodicValidation

logger = logging.getLogger(__name__)


class Stage(abc.ABC):
    """What one training stage adds to the runner. Subclasses set the class attributes and implement `build`
    and `loss`; `self.accelerator` is set by the runner before `build` is called."""

    name: str = "stage"  # key of the loss curve in training_log.json, progress-bar label
    project: str = "cleft"  # tracker project name
    arguments_file: str = "args.yaml"  # the run's arguments, written into output_dir
    previous_model: str | None = None  # model folder whose training_log.json this stage extends
    skipped_images: SkippedImages | None = None  # set by the runner: undecodable images dropped (skip_bad)
    learned_prompts: bool = False  # periodic validation scores zero-shot with the learned (else hand) prompts
    task: str | None = None  # the dataset task a stage 2 learns a prompt set for, when the dataset has tasks

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

    The scheduler stays out of `prepare` and out of checkpoints (see `optim.position_schedule`).
    Returns `(model, optimizer, scheduler, loader)`.
    """
    refusal = fsdp2_refusal(getattr(model.config, "text_quantization", None))
    if refusal and accelerator.distributed_type == DistributedType.FSDP:
        raise ConfigError(refusal)
    optimizer = build_optimizer(model, args.optimizer, args.learning_rate, args.weight_decay, args.betas, args.momentum)
    scheduler = build_scheduler(optimizer, args.warmup_steps, args.max_steps, args.lr_scheduler, args.min_lr_ratio)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if args.trackers:
        accelerator.init_trackers(project, config={k: str(v) for k, v in vars(args).items()})
    return model, optimizer, scheduler, loader


def save_model_folder(accelerator: Accelerator, model, processor, folder: Path, write_log) -> None:
    """Write `folder` atomically (model, processor, `write_log(folder)`); the state dict is gathered on every
    rank (FSDP / ZeRO-3 shards), rank 0 writes."""
    from .checkpointing import save_pretrained_atomic

    state_dict = accelerator.get_state_dict(model)  # on every rank: gathers FSDP / ZeRO-3 shards (rank 0 gets them)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)

        def save_model(target: Path) -> None:
            unwrapped.save_pretrained(target, state_dict=state_dict)

        save_pretrained_atomic(folder, save_model, processor, write_log)
    accelerator.wait_for_everyone()


def training_log_writer(log: LossLog, stage: Stage, validation: PeriodicValidation | None = None,
                        args: Any = None):
    """The writer of a model folder's training_log.json (loss curves, skipped images, validation curves, the
    run arguments `args` as this stage's recipe); call it on every process (the skipped-image count is
    collective)."""
    from ..hub.upload import arguments_summary

    skipped = stage.skipped_images.state() if stage.skipped_images is not None else None  # collective
    recipe = None if args is None else json.loads(json.dumps(arguments_summary(args, stage.task), default=str))
    writer = log.writer(stage.name, stage.previous_model, skipped, recipe)
    return validation.extend_log_writer(writer) if validation is not None else writer


def finish_run(accelerator: Accelerator, model, processor, log: LossLog, args: Any, stage: Stage,
               validation: PeriodicValidation | None = None) -> Path:
    """Write `output_dir/model` atomically (model, processor, training_log.json) and close the trackers."""
    final_dir = Path(args.output_dir) / "model"
    save_model_folder(accelerator, model, processor, final_dir, training_log_writer(log, stage, validation, args))
    accelerator.end_training()
    return final_dir


def hold_output_dir(accelerator: Accelerator, output_dir: str | Path) -> RunLock | None:
    """The main process locks `output_dir` (see `run_lock`); a refusal is raised on every process."""
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = RunLock(output_dir).acquire()
        except OutputDirInUseError as error:
            refusal = str(error)
    if accelerator.num_processes > 1:
        refusal = [refusal]
        broadcast_object_list(refusal)
        refusal = refusal[0]
    if refusal:
        raise OutputDirInUseError(refusal)
    return lock


def run_arguments(args: Any) -> dict[str, Any]:
    """The run's arguments as JSON values (stored in every checkpoint, compared on resume)."""
    return json.loads(json.dumps(dataclasses.asdict(args), default=str))


def resume_training(accelerator: Accelerator, args: Any, checkpoints: CheckpointManager, optimizer, scheduler
                    ) -> dict[str, Any]:
    """Restore the checkpoint named by `args.resume_from_checkpoint` and apply the arguments that may change on
    resume (`checkpointing.RESUME_CHANGEABLE`, with a warning); other changed arguments are refused (one line)."""
    state = checkpoints.resume(args.resume_from_checkpoint, getattr(args, "allow_inexact_resume", False))
    start = int(state["step"])
    if start:
        current = run_arguments(args)
        changed, refused = compare_arguments(state.get("arguments"), current)
        saved = state["arguments"] if changed or refused else {}
        if refused:
            listed = ", ".join(f"{k} ({saved[k]!r} -> {current[k]!r})" for k in refused)
            raise CheckpointError(f"resume_from_checkpoint: the checkpoint was trained with other values of {listed}; "
                                  "these cannot change on resume: restore them or start a new output_dir")
        if changed:
            logger.warning("resuming with changed %s", ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed))
    position_schedule(optimizer, scheduler, args.learning_rate, start)
    return state


def run_stage(stage: Stage) -> dict[str, Any]:
    """Train `stage` and write `output_dir/model` (model + processor + training_log.json, atomically).

    Returns `{"model_dir", "steps", "loss_curve", **stage.summary()}`.
    """
    args = stage.args
    accelerator = stage.accelerator = make_accelerator(args)
    stage.skipped_images = SkippedImages(accelerator)
    lock = hold_output_dir(accelerator, args.output_dir)
    try:
        if accelerator.is_main_process:
            save_arguments(args, Path(args.output_dir) / stage.arguments_file)
        model, processor, loader = stage.build()
        model, optimizer, scheduler, loader = prepare_run(accelerator, args, model, loader, stage.project)

        checkpoints = CheckpointManager(accelerator, args.output_dir, args.save_every, args.keep_last)
        state = resume_training(accelerator, args, checkpoints, optimizer, scheduler)
        log = LossLog(accelerator, args.log_every)
        log.restore(state)
        stage.skipped_images.restore(state.get("skipped_images"))
        start = int(state["step"])
        arguments = run_arguments(args)
        validation = None
        if args.eval_every:  # periodic validation: a hook the step loop calls after every optimiser step
            validation = PeriodicValidation(
                args, accelerator, model, processor, class_names=getattr(stage, "class_names", None) or None,
                learned_prompts=stage.learned_prompts, stage_name=stage.name, set_train_mode=stage.set_train_mode,
                save_model=lambda folder: save_model_folder(accelerator, model, processor, folder,
                                                            training_log_writer(log, stage, validation, args)))
            validation.restore(state)

        batches = stage.batches(model, loader, start * args.gradient_accumulation_steps)
        stage.set_train_mode(model)
        train_steps(accelerator, model, optimizer, scheduler, checkpoints, log, batches,
                    lambda batch: stage.loss(model, batch), start=start, args=args, desc=stage.name,
                    extra_state=lambda: {**log.state(), "arguments": arguments,
                                         "skipped_images": stage.skipped_images.state(),
                                         **(validation.state() if validation is not None else {})},
                    skipped=stage.skipped_images, after_step=validation.after_step if validation is not None else None)
        final_dir = finish_run(accelerator, model, processor, log, args, stage, validation)
    finally:
        if lock is not None:
            lock.release()
    summary = {"model_dir": str(final_dir), "steps": args.max_steps, "loss_curve": log.points, **stage.summary()}
    if validation is not None:
        summary["validation"] = validation.log_entry()[stage.name]
    return summary


__all__ = ["Stage", "finish_run", "hold_output_dir", "prepare_run", "resume_training", "run_arguments", "run_stage",
           "save_model_folder", "training_log_writer"]
