"""The weights stay finite: after every optimiser step the parameters it updated are checked (not the frozen LLM).

A finite loss and gradient norm can still give non-finite weights (an overflowing update, a huge learning rate).
`check_finite_update` runs right after `optimizer.step()` and before anything is saved (validation's best model,
checkpoints, the final model), so a NaN model is never written: the run stops with `NonFiniteWeightsError`
naming the newest complete checkpoint, the last finite state on disk.

Cost: one fused norm per parameter group list (`torch._foreach_norm`) and one scalar all-reduce per step.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


class NonFiniteWeightsError(RuntimeError):
    """Optimiser step `step` made trainable weights NaN/inf; nothing of that step was saved."""

    def __init__(self, step: int, names: list[str], last_checkpoint: Path | None):
        self.step, self.names, self.last_checkpoint = step, names, last_checkpoint
        where = f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
        if last_checkpoint is not None:
            advice = (
                f"the last finite state is {last_checkpoint}: resume with --resume_from_checkpoint "
                f"{last_checkpoint} and a lower --learning_rate (or a --max_grad_norm)"
            )
        else:
            advice = "no checkpoint was written before it: start again with a lower --learning_rate"
        super().__init__(
            f"non-finite weights after the optimiser step of step {step}{where}; nothing of this step "
            f"was saved; {advice}"
        )


def updated_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters an optimiser step changes (local shards under FSDP), each once."""
    seen, params = set(), []
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if id(parameter) not in seen and parameter.numel():
                seen.add(id(parameter))
                params.append(parameter)
    return params


def non_finite_parameters(params: Iterable[torch.Tensor]) -> list[int]:
    """Indices of the tensors holding a NaN/inf; a fused norm screens them, `isfinite` confirms (overflow)."""
    # FSDP2 parameters are DTensors: each process checks its local shard (the caller ORs over processes)
    params = [(p.to_local() if hasattr(p, "to_local") else p).detach() for p in params]
    if not params:
        return []
    norms = torch._foreach_norm([p if p.is_floating_point() else p.float() for p in params])
    suspicious = (~torch.isfinite(torch.stack([n.float().reshape(()) for n in norms]))).nonzero().flatten().tolist()
    return [i for i in suspicious if not bool(torch.isfinite(params[i]).all())]


def check_finite_update(
    optimizer: torch.optim.Optimizer, step: int, any_process, names: dict[int, str], last_checkpoint
) -> None:
    """Raise `NonFiniteWeightsError` (on every process) when the step left a non-finite trainable parameter.

    `any_process(flag) -> bool` ORs a flag over processes (`CheckpointManager._anywhere`), `names` maps
    `id(parameter)` to its name for the message, `last_checkpoint()` gives the newest complete checkpoint or None.
    """
    params = updated_parameters(optimizer)
    bad = non_finite_parameters(params)
    if any_process(bool(bad)):
        raise NonFiniteWeightsError(step, [names.get(id(params[i]), f"parameter {i}") for i in bad], last_checkpoint())


__all__ = ["NonFiniteWeightsError", "check_finite_update", "non_finite_parameters", "updated_parameters"]
