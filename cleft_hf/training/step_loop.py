"""The step loop of a stage run, and its NaN guard.

Each optimiser step: accumulate micro-batches (loss, NaN/inf check, backward, clip, check of the gradient norm,
step), schedule, log, validate (and keep a new best model), checkpoint, stop on SIGTERM/SIGINT. A NaN/inf loss or
gradient norm on any process stops the run after saving the state from before that step to
`checkpoints/nonfinite_step_<n>` (resume from it with a lower learning rate).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .checkpointing import CheckpointManager, any_process, list_checkpoints
from .finite_update import check_finite_update
from .model_folder import save_model_folder
from .run_state import RunState
from .stop_signals import StopSignals, TrainingInterrupted


class NonFiniteLossError(RuntimeError):
    """Step `step` gave a NaN/inf (loss or gradient norm); the last finite state was saved to `state_dir`."""

    def __init__(self, step: int, value: float, state_dir: Path | None, what: str = "loss"):
        self.step, self.loss_value, self.state_dir = step, value, state_dir
        if state_dir is not None:
            advice = (
                f"; the state before this step (finite) is in {state_dir}: resume with --resume_from_checkpoint "
                f"{state_dir} and a lower --learning_rate, or check the batch"
            )
        else:
            advice = (
                "; the weights themselves are no longer finite (an earlier update overflowed), so nothing was "
                "saved: resume from an earlier checkpoint with a lower --learning_rate"
            )
        super().__init__(f"non-finite {what} at step {step} (on this process: {value}){advice}")


def batch_norm_statistics(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running statistics (BatchNorm buffers) that a forward pass in training mode changes."""
    return {
        f"{prefix}.{name}": buffer.detach().clone()
        for prefix, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._NormBase)
        for name, buffer in module.named_buffers(recurse=False)
        if buffer is not None
    }


def restore_tensors(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            buffers[name].copy_(value)


def stop_if_not_finite(
    value: torch.Tensor,
    step: int,
    checkpoints: CheckpointManager,
    *,
    what: str = "loss",
    model: torch.nn.Module | None = None,
    statistics: dict[str, torch.Tensor] | None = None,
    state: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Raise `NonFiniteLossError` if `value` is NaN/inf on ANY process, after saving the last finite state.

    Call before `accelerator.backward(loss)` (and on the gradient norm before `optimizer.step()`). With
    `model` and `statistics` (`batch_norm_statistics` taken before the step's first forward), the step's
    gradients are dropped and its BatchNorm statistics restored, so `checkpoints/nonfinite_step_<step>` is
    the state at the START of the step (trainer step `step - 1`, with the trainer state `state()`): resuming
    from it redoes the step. When the weights themselves are not finite, nothing is saved. Costs one scalar
    all-reduce; call on every process.
    """
    bad = (~torch.isfinite(value.detach())).any().to(torch.float32).reshape(1)
    accelerator = checkpoints.accelerator
    if not any_process(accelerator, bool(bad.item())):
        return
    weights_finite = True
    if model is not None:
        restore_tensors(model, statistics or {})
        for parameter in model.parameters():
            parameter.grad = None
        weights_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    state_dir = None
    if not any_process(accelerator, not weights_finite):
        state_dir = checkpoints.save(step - 1, state() if state is not None else None, name=f"nonfinite_step_{step}")
    raise NonFiniteLossError(step, float(value.detach().float().sum()), state_dir, what)


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def train_steps(run: RunState) -> None:
    """Optimiser steps `run.start + 1 .. max_steps` (see the module docstring); raises `NonFiniteLossError` or
    `TrainingInterrupted` (after saving the state of the step) when the run stops early."""
    args, accelerator, model = run.args, run.accelerator, run.model
    unwrapped = accelerator.unwrap_model(model)
    max_norm = args.max_grad_norm or float("inf")  # inf: the norm is still computed (and checked), not clipped
    names = {id(parameter): name for name, parameter in unwrapped.named_parameters()}  # for non-finite weights
    newest_checkpoint = lambda: (list_checkpoints(args.output_dir) or [(0, None)])[-1][1]
    progress = tqdm(
        total=args.max_steps, initial=run.start, desc=run.stage.name, disable=not accelerator.is_local_main_process
    )
    run.stage.set_train_mode(model)
    with StopSignals() as stop:
        for step in range(run.start + 1, args.max_steps + 1):
            guard = {"model": unwrapped, "statistics": batch_norm_statistics(unwrapped), "state": run.trainer_state}
            for _ in range(args.gradient_accumulation_steps):
                batch = run.skipped.take(next(run.batches))
                with accelerator.accumulate(model):
                    loss = run.stage.loss(model, batch)
                    stop_if_not_finite(loss, step, run.checkpoints, **guard)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
                        if norm is not None:
                            stop_if_not_finite(norm, step, run.checkpoints, what="gradient norm", **guard)
                    run.optimizer.step()
                    if accelerator.sync_gradients:  # before anything of this step is saved
                        check_finite_update(
                            run.optimizer, step, lambda flag: any_process(accelerator, flag), names, newest_checkpoint
                        )
                    run.optimizer.zero_grad(set_to_none=True)
                run.log.add(loss)
            run.scheduler.step()
            run.log.end_step(step, learning_rate(run.optimizer), progress)
            if run.validation is not None and run.validation.due(step):
                if run.validation.after_step(model, step):
                    save_model_folder(run, Path(args.output_dir) / "best_model")
                run.stage.set_train_mode(model)
            saved = run.checkpoints.save(step, run.trainer_state()) if run.checkpoints.should_save(step) else None
            signum = stop.requested(accelerator)
            if signum:
                saved = saved or run.checkpoints.save(step, run.trainer_state())
                progress.close()
                raise TrainingInterrupted(signum, step, saved)
    progress.close()


__all__ = ["NonFiniteLossError", "batch_norm_statistics", "stop_if_not_finite", "train_steps"]
