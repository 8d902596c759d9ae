"""Optimiser with weight-decay parameter groups, and the warm-up + cosine learning-rate schedule.

The groups come from `timm.optim.param_groups_weight_decay`: no weight decay for every 1-D (or 0-D) parameter
(biases, norm weights, logit scale / bias) and for the names matched by `NO_DECAY_PATTERNS` (the learned prompt
context) or listed by a submodule's timm `no_weight_decay()` hook (ViT `pos_embed`, `cls_token`, `reg_token`).
Frozen parameters (`requires_grad=False`) are left out of the optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import logging

from timm.optim import param_groups_weight_decay
import torch
from torch import nn
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

logger = logging.getLogger(__name__)

NO_DECAY_PATTERNS = ("*prompt_sets.*", "*logit_scale", "*logit_bias")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names listed by any submodule's timm-style `no_weight_decay()` (names relative to that submodule)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if callable(hook):
            names.update(f"{prefix}.{name}" if prefix else name for name in hook())
    return names


def parameter_groups(
    model: nn.Module, weight_decay: float, no_decay_patterns: Sequence[str] = NO_DECAY_PATTERNS
) -> list[dict]:
    """timm's optimiser groups over the trainable parameters: `{params, weight_decay: 0.0}` (see module
    docstring) and `{params, weight_decay}`; empty groups are dropped, tied parameters appear once."""
    patterns = (*no_decay_patterns, *sorted(no_weight_decay_names(model)))
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=patterns)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False)")
    for group in groups:
        logger.info(
            "optimiser group: %d tensors (%d values) with weight decay %g",
            len(group["params"]),
            sum(p.numel() for p in group["params"]),
            group["weight_decay"],
        )
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 4e-5,
    weight_decay: float = 0.1,
    betas: Iterable[float] = (0.9, 0.999),
    momentum: float = 0.9,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW (stage-1 recipe: lr 4e-5, wd 0.1, betas 0.9/0.999) or SGD with momentum (stage 2: lr 1e-4, wd 1e-3)."""
    name = name.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2:
            raise ValueError(f"betas must be two floats, got {betas}")
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    kind: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for `warmup_steps`, then `kind` decay to `min_lr_ratio * lr` at `total_steps`.

    Steps are optimiser steps. The runner keeps the schedule out of `accelerator.prepare` and out of the
    checkpoint (a registered object would be pickled and loaded with code): it is rebuilt on resume and put at
    the resumed step with `position_schedule`.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {kind!r}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps}, {total_steps}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    if kind == "linear":
        if min_lr_ratio:
            raise ValueError("min_lr_ratio is only supported by the cosine schedule")
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if min_lr_ratio > 0:
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup_steps, total_steps, min_lr_rate=min_lr_ratio
        )
    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def position_schedule(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, learning_rate: float, step: int
) -> None:
    """Put a freshly built schedule at optimiser step `step` after the optimiser state was loaded from a checkpoint.

    The schedule is not checkpointed: it is a function of the step and the run's arguments, so a resumed run
    uses its own `learning_rate` / `max_steps` / warm-up (the loaded optimiser groups carry the saved run's `lr`
    and `initial_lr`, which are replaced here). With unchanged arguments this gives the uninterrupted values.
    """
    for group, lr_lambda in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = learning_rate
        group["lr"] = learning_rate * lr_lambda(step)
    scheduler.base_lrs = [learning_rate] * len(optimizer.param_groups)
    scheduler.last_epoch = step
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


__all__ = ["build_optimizer", "build_scheduler", "no_weight_decay_names", "parameter_groups", "position_schedule"]
