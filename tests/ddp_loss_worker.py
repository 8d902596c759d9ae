"""Worker for tests/test_losses.py: contrastive losses under 2-process DDP (gloo, CPU) through Accelerate.

Launched as `accelerate launch --multi_gpu --num_processes 2 ... tests/ddp_loss_worker.py INPUTS OUT_DIR`.
INPUTS (written by the test) holds the global batch and the initial weights of two tiny two-tower models.
For every scenario each rank takes its rows of the global batch, computes the loss, backpropagates through
the DDP-wrapped model and writes `(mean loss over ranks, gradients after DDP averaging)` to
`OUT_DIR/rank<r>.pt`. The test compares them with a single process on the concatenated batch. Finally a NaN
loss on one rank is fed to `step_loop.stop_if_not_finite`, which must stop both ranks.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
import torch.nn.functional as F

# (name, loss kind, local_loss, rows of rank 0 (rank 1 gets the rest), use text ids)
SCENARIOS = (
    ("clip_even", "clip", True, 4, False),
    ("clip_uneven", "clip", True, 5, False),
    ("clip_full_matrix", "clip", False, 4, False),
    ("clip_text_ids_uneven", "clip", True, 3, True),
    ("siglip_even", "siglip", True, 4, False),
    ("siglip_text_ids_uneven", "siglip", True, 5, True),
)


class TinyTowers(nn.Module):
    """Two linear towers + logit scale/bias: `forward(images (B, 6), texts (B, 5)) -> ((B, 4), (B, 4))`."""

    def __init__(self):
        super().__init__()
        self.image_tower = nn.Linear(6, 4)
        self.text_tower = nn.Linear(5, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.logit_bias = nn.Parameter(torch.tensor(-1.0))

    def forward(self, images: torch.Tensor, texts: torch.Tensor):
        return F.normalize(self.image_tower(images), dim=-1), F.normalize(self.text_tower(texts), dim=-1)


def scenario_loss(model: nn.Module, kind: str, local_loss: bool, images, texts, text_ids, gather: bool = True):
    """Loss of one scenario; `model` may be DDP-wrapped (its forward runs the towers)."""
    from cleft_hf.modeling.loss_cleft import clip_loss, siglip_loss

    core = model.module if hasattr(model, "module") else model
    image_embeds, text_embeds = model(images, texts)
    if kind == "clip":
        # logit_bias must take part in the graph for DDP; 0 * bias keeps the loss unchanged.
        scale = core.logit_scale
        loss = clip_loss(image_embeds, text_embeds, scale, gather=gather, local_loss=local_loss, text_ids=text_ids)
        return loss + 0.0 * core.logit_bias
    return siglip_loss(image_embeds, text_embeds, core.logit_scale, core.logit_bias, gather=gather, text_ids=text_ids)


def _non_finite_stop(accelerator, out_dir: str) -> dict:
    """A NaN loss on rank 1 only must stop BOTH ranks after one shared state save (no deadlock)."""
    from cleft_hf.training.checkpointing import CheckpointManager
    from cleft_hf.training.step_loop import NonFiniteLossError, stop_if_not_finite

    manager = CheckpointManager(accelerator, f"{out_dir}/run", save_every=1)
    manager.save(1)
    loss = torch.tensor(float("nan") if accelerator.process_index == 1 else 0.5)
    try:
        stop_if_not_finite(loss, 2, manager)
    except NonFiniteLossError as error:
        return {"raised_at": error.step, "state_dir": str(error.state_dir)}
    return {"raised_at": None}


def main(inputs_path: str, out_dir: str) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    inputs = torch.load(inputs_path)
    rank = accelerator.process_index
    results = {"world_size": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type)}
    for name, kind, local_loss, split, use_ids in SCENARIOS:
        model = TinyTowers()
        model.load_state_dict(inputs["state_dict"])
        model = accelerator.prepare(model)
        rows = slice(0, split) if rank == 0 else slice(split, None)
        text_ids = inputs["text_ids"][rows] if use_ids else None
        loss = scenario_loss(model, kind, local_loss, inputs["images"][rows], inputs["texts"][rows], text_ids)
        accelerator.backward(loss)
        mean_loss = accelerator.gather(loss.detach().reshape(1)).mean()
        grads = {k: p.grad.detach().clone() for k, p in accelerator.unwrap_model(model).named_parameters()}
        results[name] = {"loss": mean_loss, "grads": grads}
    results["non_finite"] = _non_finite_stop(accelerator, out_dir)
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
