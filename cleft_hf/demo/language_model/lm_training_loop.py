"""The optimisation shared by the demo's causal LM and BERT: AdamW (no weight decay on biases, norms and
embeddings), linear warm-up then cosine decay, gradient clipping, and an optional time budget that re-plans the
step count from the measured step time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
import logging
import math
import os
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .token_windows import collate_windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMTrainingSettings:
    """The optimisation settings `pretrain_causal_lm` and `pretrain_masked_lm` share (keyword arguments of theirs
    with the same names)."""

    batch_size: int
    max_steps: int
    lr: float
    weight_decay: float
    warmup_fraction: float
    seed: int
    time_budget_s: float | None
    progress: bool

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> LMTrainingSettings:
        """The settings among a pretraining function's arguments (its `locals()` before anything else is bound)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls)})


def _cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and embeddings (1-D or embedding tables)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim < 2 or "wte" in name or "wpe" in name or "embed" in name
        (no_decay if skip else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def default_num_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def train_lm(
    model: nn.Module,
    windows: list[list[int]],
    pad_token_id: int,
    settings: LMTrainingSettings,
    *,
    started: float,
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, int]],
) -> tuple[list[float], bool, int]:
    """Run the optimisation; returns (per-step mean token loss, stopped by the time budget, planned steps).
    `loss_fn(model, batch) -> (summed NLL, token count)`; `started` is when the run began (the time budget's
    clock)."""
    batch_size, max_steps, lr = settings.batch_size, settings.max_steps, settings.lr
    time_budget_s, warmup_fraction = settings.time_budget_s, settings.warmup_fraction
    optimizer = _optimizer(model, lr, settings.weight_decay)
    plan = {"total": max_steps, "warmup": max(1, round(warmup_fraction * max_steps))}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_with_warmup(step, plan["warmup"], plan["total"])
    )
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    curve: list[float] = []
    loop_started = time.perf_counter()
    stopped_by_budget = False
    bar = tqdm(total=max_steps, desc="pretraining LM", disable=not settings.progress, leave=False)
    for step in range(max_steps):
        if step >= plan["total"]:
            break
        if len(order) < batch_size:
            order.extend(torch.randperm(len(windows), generator=generator).tolist())
        batch = collate_windows([windows[i] for i in order[:batch_size]], pad_token_id)
        del order[:batch_size]
        nll, count = loss_fn(model, batch)
        loss = nll / max(count, 1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite LM loss {float(loss)} at step {step}; lower lr={lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        curve.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{curve[-1]:.3f}")
        if time_budget_s is not None:
            elapsed_total = time.perf_counter() - started
            if elapsed_total > time_budget_s:
                logger.warning("time budget %.0f s exhausted at step %d; stopping early", time_budget_s, step + 1)
                stopped_by_budget = True
                break
            if (step + 1) in (5, 10) or (step + 1) % 25 == 0:
                _replan(
                    plan,
                    step + 1,
                    max_steps,
                    time_budget_s,
                    elapsed_total,
                    (time.perf_counter() - loop_started) / (step + 1),
                    warmup_fraction,
                )
                bar.total = plan["total"]
        if step % 50 == 0 or step + 1 == plan["total"]:
            logger.info("step %d/%d loss %.4f lr %.2e", step + 1, plan["total"], curve[-1], scheduler.get_last_lr()[0])
    bar.close()
    return curve, stopped_by_budget, plan["total"]


def _replan(
    plan: dict,
    done: int,
    max_steps: int,
    time_budget_s: float,
    elapsed: float,
    per_step: float,
    warmup_fraction: float,
) -> None:
    """Set ``plan["total"]`` to the steps that fit the budget (keeping ~15 % of it for evaluation and saving)."""
    affordable = done + int((0.85 * time_budget_s - elapsed) / per_step)
    total = max(done + 1, min(max_steps, affordable))
    if total != plan["total"]:
        logger.info(
            "time budget %.0f s at %.3f s/step: training %d of at most %d steps",
            time_budget_s,
            per_step,
            total,
            max_steps,
        )
    plan["total"] = total
    plan["warmup"] = min(plan["warmup"], max(1, round(warmup_fraction * total)))


__all__ = ["LMTrainingSettings", "default_num_threads", "train_lm"]
