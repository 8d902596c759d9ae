"""The one owner of a run's `training_log.json`: loss per step, validation curves, skipped images, the recipe.

The log is kept in every checkpoint (`state` / `restore`, for an exact resume) and written once into each model
folder the run saves (`entries`, then `cleft_hf.training_log.write_training_log` inside the atomic folder). A
later stage starts from the earlier model's log (read once, when the run starts). Format: `cleft_hf.training_log`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from accelerate import Accelerator
import torch

from ..training_log import read_training_log
from .batches import SkippedImages

logger = logging.getLogger(__name__)


class TrainingLog:
    """What a stage run records: the mean loss of every optimiser step (over processes and micro-batches),
    logged every `log_every` steps; with `track_validation`, the validation curves and the best step.

    Args:
        accelerator: the run's accelerator (reductions, trackers).
        stage: the stage's name, the key of its entries.
        log_every: optimiser steps between tracker / console logs of the loss.
        recipe: the stage's run arguments (JSON values, with the stage's title under "stage").
        skipped: the run's skipped-image count (a collective when read).
        earlier_model: the model folder this stage starts from (its log is extended; None for a new model).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        stage: str,
        log_every: int,
        *,
        recipe: dict[str, Any],
        skipped: SkippedImages,
        earlier_model: str | None = None,
    ):
        self.accelerator, self.stage, self.log_every = accelerator, stage, log_every
        self.recipe, self.skipped = recipe, skipped
        self.earlier = read_training_log(earlier_model)
        self.points: list[tuple[int, float]] = []
        self._pending: list[torch.Tensor] = []
        self.curves: dict[str, list[tuple[int, float]]] | None = None  # validation metric -> [(step, value)]
        self.best_metric: str | None = None
        self.keep_best = False
        self.best: dict[str, float] | None = None  # {"step", "value"} of the best validation so far

    # ------------------------------------------------------------------------------------------- loss
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

    # ------------------------------------------------------------------------------------------- validation
    def track_validation(self, metrics: tuple[str, ...], best_metric: str, keep_best: bool) -> None:
        """Keep validation curves of `metrics` (the run validates) and, with `keep_best`, the best step of
        `best_metric`."""
        self.curves = {name: [] for name in metrics}
        self.best_metric, self.keep_best = best_metric, keep_best

    def add_validation(self, step: int, metrics: dict[str, float]) -> bool:
        """Record one validation; True when `best_metric` reached a new best (with `keep_best`)."""
        for name, value in metrics.items():
            self.curves[name].append((step, value))
        value = metrics[self.best_metric]
        if not self.keep_best or (self.best is not None and value <= self.best["value"]):
            return False
        self.best = {"step": step, "value": value}
        return True

    def validation_entry(self) -> dict[str, Any]:
        """This stage's entry under "validation": the curves and the best step."""
        return {**self.curves, "best": {"metric": self.best_metric, **(self.best or {})}}

    # ------------------------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps for an exact resume (a collective: call on every process)."""
        state = {"loss_curve": self.points, "skipped_images": self.skipped.state()}
        if self.curves is not None:
            state["validation"] = {"curves": self.curves, "best": self.best}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        self.points = [tuple(point) for point in state.get("loss_curve", [])]
        self.skipped.restore(state.get("skipped_images"))
        if self.curves is not None:
            saved = state.get("validation") or {}
            self.curves = {name: [tuple(p) for p in saved.get("curves", {}).get(name, [])] for name in self.curves}
            self.best = saved.get("best")

    def entries(self) -> dict[str, Any]:
        """The whole `training_log.json` of a model folder saved now: the earlier stages' log plus this stage's
        loss curve, skipped images, recipe and validation (a collective: call on every process)."""
        log = copy.deepcopy(self.earlier)
        log[self.stage] = self.points
        log["skipped_images"] = {**log.get("skipped_images", {}), self.stage: self.skipped.state()}
        log["recipes"] = {**log.get("recipes", {}), self.stage: self.recipe}
        if self.curves is not None:
            log["validation"] = {**log.get("validation", {}), self.stage: self.validation_entry()}
        return log


__all__ = ["TrainingLog"]
