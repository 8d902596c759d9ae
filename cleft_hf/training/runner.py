"""The one stage runner: both training stages (contrastive pretraining, prompt tuning) run through `run_stage`.

A stage says what is particular to it (`Stage`: model + processor + loader, the batch stream, the loss); the
runner does everything else, in one order for both, reading top to bottom:

    accelerator -> output-folder lock -> arguments file -> datasets (loaded once) -> stage.build -> optimiser,
    schedule, accelerator.prepare -> checkpoints + resume (verified files; changed arguments applied or refused)
    -> training log, validation -> `RunState` -> `step_loop.train_steps` -> final model folder -> lock released
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, set_seed
import torch

from ..arguments import ConfigError, save_arguments
from ..data import get_dataset_spec
from ..modeling.quantization_cleft import fsdp2_refusal
from ..run_lock import hold_output_dir
from .batches import SkippedImages, batch_stream
from .checkpointing import CheckpointManager
from .final_save import SignalsDeferred, save_final_or_keep_state
from .model_folder import save_model_folder
from .optim import build_optimizer, build_scheduler
from .resume import resume_training, run_arguments
from .run_log import TrainingLog
from .run_state import RunState
from .step_loop import train_steps
from .validation import PeriodicValidation

logger = logging.getLogger(__name__)


class Stage(abc.ABC):
    """What one training stage adds to the runner. Subclasses set the class attributes and implement `build`
    and `loss`; `self.accelerator` is set by the runner before `build` is called."""

    name: str = "stage"  # key of the loss curve in training_log.json, progress-bar label
    recipe_title: str = "stage"  # title of the stage's recipe in training_log.json and the model card
    project: str = "cleft"  # tracker project name
    arguments_file: str = "args.yaml"  # the run's arguments, written into output_dir
    previous_model: str | None = None  # model folder whose training_log.json this stage extends
    learned_prompts: bool = False  # periodic validation scores zero-shot with the learned (else hand) prompts
    task: str | None = None  # the dataset task a stage 2 learns a prompt set for, when the dataset has tasks
    class_names: list[str] | None = None  # the classes validation scores (None: the dataset task's)

    def __init__(self, args: Any):
        self.args = args
        self.spec = get_dataset_spec(args.dataset)
        self.accelerator: Accelerator | None = None
        self.skipped_images: SkippedImages | None = None  # set by the runner: images dropped at decode time

    @abc.abstractmethod
    def build(self, datasets) -> tuple[torch.nn.Module, Any, torch.utils.data.DataLoader]:
        """The model, its processor and the training DataLoader (on `datasets`, the loaded splits), not yet
        prepared."""

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


def make_accelerator(args: Any) -> Accelerator:
    """Accelerator for a step-based run: seedable sampler (same order for any resume point), trackers in
    `output_dir/logs`. Mixed precision and process count come from `accelerate launch`."""
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # `accelerate launch --multi_gpu` on a CPU machine: gloo processes
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.trackers or None,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "logs")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
    )
    set_seed(args.seed, deterministic=False)
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return accelerator


def prepare_run(accelerator: Accelerator, args: Any, model, loader, project: str):
    """Optimiser (parameter groups) and schedule from `args`, `accelerator.prepare`, trackers.

    The scheduler stays out of `prepare` and out of checkpoints (see `optim.position_schedule`).
    Returns `(model, optimizer, scheduler, loader)`.
    """
    refusal = fsdp2_refusal(getattr(model.config, "text_quantization", None))
    if refusal and accelerator.distributed_type == DistributedType.FSDP:
        raise ConfigError(refusal)
    optimizer = build_optimizer(
        model, args.optimizer, args.learning_rate, args.weight_decay, args.betas, args.momentum
    )
    scheduler = build_scheduler(optimizer, args.warmup_steps, args.max_steps, args.lr_scheduler, args.min_lr_ratio)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if args.trackers:
        accelerator.init_trackers(project, config={k: str(v) for k, v in vars(args).items()})
    return model, optimizer, scheduler, loader


def start_run(stage: Stage, accelerator: Accelerator) -> RunState:
    """Everything before the first step: data, model, optimiser, resume, log, validation (see the module)."""
    args = stage.args
    if accelerator.is_main_process:
        save_arguments(args, Path(args.output_dir) / stage.arguments_file)
    with accelerator.local_main_process_first():  # it writes the node's load cache, the others then read it
        datasets = stage.spec.load(args.data_root, **args.loader_kwargs)
    model, processor, loader = stage.build(datasets)
    model, optimizer, scheduler, loader = prepare_run(accelerator, args, model, loader, stage.project)
    checkpoints = CheckpointManager(accelerator, args.output_dir, args.save_every, args.keep_last)
    state = resume_training(args, checkpoints, optimizer, scheduler)
    arguments = run_arguments(args)
    log = TrainingLog(
        accelerator,
        stage.name,
        args.log_every,
        recipe={"stage": stage.recipe_title, **arguments},
        skipped=stage.skipped_images,
        earlier_model=stage.previous_model,
    )
    validation = None
    if args.eval_every:
        validation = PeriodicValidation(
            args,
            accelerator,
            processor,
            datasets,
            log,
            class_names=stage.class_names or None,
            learned_prompts=stage.learned_prompts,
        )
    log.restore(state)
    start = int(state["step"])
    batches = stage.batches(model, loader, start * args.gradient_accumulation_steps)
    return RunState(
        args=args,
        stage=stage,
        accelerator=accelerator,
        model=model,
        processor=processor,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=batches,
        checkpoints=checkpoints,
        log=log,
        skipped=stage.skipped_images,
        validation=validation,
        arguments=arguments,
        start=start,
    )


def run_stage(stage: Stage) -> dict[str, Any]:
    """Train `stage` and write `output_dir/model` (model + processor + training_log.json, atomically).

    Returns `{"model_dir", "steps", "loss_curve", **stage.summary()}` (and "validation" when it validated).
    """
    args = stage.args
    accelerator = stage.accelerator = make_accelerator(args)
    stage.skipped_images = SkippedImages(accelerator)
    lock = hold_output_dir(accelerator, args.output_dir)
    try:
        run = start_run(stage, accelerator)
        train_steps(run)
        with SignalsDeferred():  # SIGTERM/SIGINT: the model folder is finished first, then the run stops
            final_dir = save_final_or_keep_state(
                lambda: save_model_folder(run, Path(args.output_dir) / "model"),
                run.checkpoints,
                args.max_steps,
                run.trainer_state,
            )
        accelerator.end_training()
    finally:
        if lock is not None:
            lock.release()
    summary = {"model_dir": str(final_dir), "steps": args.max_steps, "loss_curve": run.log.points, **stage.summary()}
    if run.validation is not None:
        summary["validation"] = run.log.validation_entry()
    return summary


__all__ = ["Stage", "hold_output_dir", "make_accelerator", "prepare_run", "run_stage", "start_run"]
