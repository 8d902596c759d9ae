"""The step loop of the stage runner and its pieces: accelerator set-up, step-based batch stream, loss log."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from .checkpointing import batch_norm_statistics, list_checkpoints
from .finite_update import check_finite_update
from .stop_signals import StopSignals, TrainingInterrupted

logger = logging.getLogger(__name__)
TRAINING_LOG = "training_log.json"  # loss curves per stage, kept in the model folder


def make_accelerator(args: Any) -> Accelerator:
    """Accelerator for a step-based run: seedable sampler (same order for any resume point), trackers in
    `output_dir/logs`. Mixed precision and process count come from `accelerate launch`."""
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # `accelerate launch --multi_gpu` on a CPU machine: gloo processes
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.trackers or None,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
    )
    set_seed(args.seed, deterministic=False)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return accelerator


def batch_stream(loader, accelerator: Accelerator, start_micro_step: int) -> Iterator[dict[str, Any]]:
    """Endless batches of a prepared DataLoader, resuming at micro-batch `start_micro_step`.

    Epoch e uses the seedable sampler's order for seed + e, so a resumed run sees exactly the batches an
    uninterrupted run would (skipped batches are not loaded).
    """
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("the training DataLoader is empty (fewer examples than one batch?)")
    epoch, position = divmod(start_micro_step, per_epoch)
    while True:
        loader.set_epoch(epoch)
        source = accelerator.skip_first_batches(loader, position) if position else loader
        yield from source
        epoch, position = epoch + 1, 0


class LossLog:
    """Loss values per optimiser step, averaged over processes and micro-batches; written as JSON."""

    def __init__(self, accelerator: Accelerator, log_every: int):
        self.accelerator, self.log_every = accelerator, log_every
        self.points: list[tuple[int, float]] = []
        self._pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self._pending.append(loss.detach().float())

    def end_step(self, step: int, lr: float, progress=None) -> None:
        """Record the mean loss of the finished step; log it every `log_every` steps."""
        loss = torch.stack(self._pending).mean()
        self._pending.clear()
        loss = self.accelerator.reduce(loss, reduction="mean").item()
        self.points.append((step, loss))
        if progress is not None:
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            progress.update(1)
        if step % self.log_every == 0:
            self.accelerator.log({"train/loss": loss, "train/lr": lr}, step=step)
            logger.info("step %d loss %.4f lr %.3g", step, loss, lr)

    def state(self) -> dict[str, Any]:
        return {"loss_curve": self.points}

    def restore(self, state: dict[str, Any]) -> None:
        self.points = [tuple(point) for point in state.get("loss_curve", [])]

    def writer(self, stage: str, previous_model: str | Path | None = None, skipped: dict[str, Any] | None = None,
               recipe: dict[str, Any] | None = None):
        """A `save_pretrained_atomic` callable writing `training_log.json` into the model folder: the loss
        curves of earlier stages (read from `previous_model`, if local) plus this one, under `stage`, and
        under "recipes" each stage's run arguments (the model card's training section)."""

        def write(folder: Path) -> None:
            curves = {}
            earlier = Path(previous_model) / TRAINING_LOG if previous_model is not None else None
            if earlier is not None and earlier.is_file():
                curves.update(json.loads(earlier.read_text(encoding="utf-8")))
            curves[stage] = self.points
            if skipped is not None:
                curves["skipped_images"] = {**curves.get("skipped_images", {}), stage: skipped}
            if recipe is not None:
                curves["recipes"] = {**curves.get("recipes", {}), stage: recipe}
            (Path(folder) / TRAINING_LOG).write_text(json.dumps(curves, indent=1), encoding="utf-8")

        return write


class SkippedImages:
    """Images dropped at decode time (`skip_bad`): each named in a warning when met, counted over processes,
    stored in checkpoints and in `training_log.json` under "skipped_images" -> {stage: {count, files}}."""

    MAX_LISTED = 100

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.count = 0
        self.files: list[str] = []

    def take(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Remove the batch's `skipped_images` list (collator, skip_bad) and count it; returns the batch."""
        for path in batch.pop("skipped_images", None) or []:
            self.count += 1
            logger.warning("skipped an image that cannot be decoded: %s (%d so far on this process)", path, self.count)
            if len(self.files) < self.MAX_LISTED:
                self.files.append(str(path))
        return batch

    def state(self) -> dict[str, Any]:
        """Totals over all processes (a collective: call on every process)."""
        count = self.count
        if self.accelerator.num_processes > 1:
            count = int(self.accelerator.reduce(torch.tensor([count], device=self.accelerator.device), "sum").item())
        return {"count": count, "files": self.files}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state:  # totals of all processes before the resume, kept on the main process's count
            self.count = int(state.get("count", 0)) if self.accelerator.is_main_process else 0
            self.files = list(state.get("files", []))


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def train_steps(accelerator: Accelerator, model, optimizer, scheduler, checkpoints, log: LossLog,
                batches: Iterator[dict[str, Any]], loss_of: Callable[[dict[str, Any]], torch.Tensor], *,
                start: int, args: Any, desc: str, extra_state: Callable[[], dict[str, Any]],
                skipped: SkippedImages | None = None, after_step: Callable[[int], None] | None = None) -> None:
    """Optimiser steps `start + 1 .. args.max_steps`: accumulate micro-batches, clip, step, schedule, log,
    `after_step(step)` (periodic validation), checkpoint (`extra_state()` goes into `trainer_state.json`). A NaN/inf loss or gradient norm stops the run
    after saving the state from before that step; SIGTERM/SIGINT stop it after saving the state of the step."""
    unwrapped = accelerator.unwrap_model(model)
    max_norm = args.max_grad_norm or float("inf")  # inf: the norm is still computed (and checked), not clipped
    names = {id(parameter): name for name, parameter in unwrapped.named_parameters()}  # for non-finite weights
    newest_checkpoint = lambda: (list_checkpoints(args.output_dir) or [(0, None)])[-1][1]  # noqa: E731
    progress = tqdm(total=args.max_steps, initial=start, desc=desc, disable=not accelerator.is_local_main_process)
    with StopSignals() as stop:
        for step in range(start + 1, args.max_steps + 1):
            guard = {"step": step, "model": unwrapped, "statistics": batch_norm_statistics(unwrapped),
                     "extra_state": extra_state}
            for _ in range(args.gradient_accumulation_steps):
                batch = next(batches)
                if skipped is not None:
                    skipped.take(batch)
                with accelerator.accumulate(model):
                    loss = loss_of(batch)
                    checkpoints.check_finite(loss, **guard)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
                        if norm is not None:
                            checkpoints.check_finite(norm, what="gradient norm", **guard)
                    optimizer.step()
                    if accelerator.sync_gradients:  # before anything of this step is saved
                        check_finite_update(optimizer, step, checkpoints._anywhere, names, newest_checkpoint)
                    optimizer.zero_grad(set_to_none=True)
                log.add(loss)
            scheduler.step()
            log.end_step(step, learning_rate(optimizer), progress)
            if after_step is not None:  # periodic validation (cleft_hf.training.validation)
                after_step(step)
            saved = checkpoints.save(step, extra_state()) if checkpoints.should_save(step) else None
            signum = stop.requested(accelerator)
            if signum:
                saved = saved or checkpoints.save(step, extra_state())
                progress.close()
                raise TrainingInterrupted(signum, step, saved)
    progress.close()
