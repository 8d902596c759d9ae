"""Cross-process gathers for contrastive losses: with gradient (embeddings) and without (ids).

Both gathers accept a different batch size on every rank: sizes are exchanged first (one tiny collective),
tensors are padded to the largest size for `all_gather` and the padding is stripped afterwards.

The gradient of `all_gather_with_grad` is the SUM over ranks of the gradient each rank's loss sends to a slice,
returned to the rank that owns the slice (an `all_reduce` in the backward pass). Combined with DDP's gradient
averaging this gives exactly the gradient of the loss computed on the concatenated global batch (see
`loss_cleft.clip_loss`). `all_reduce` works on every backend (gloo has no reduce-scatter); the gathered
embeddings are small (global batch x projection dim), so the extra traffic is negligible.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size_and_rank() -> tuple[int, int]:
    """`(world_size, rank)`; `(1, 0)` outside a multi-process run."""
    if not is_distributed():
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


def gather_sizes(local_size: int, device: torch.device) -> tuple[int, ...]:
    """The dim-0 size of the local tensor on every rank, in rank order (a one-element all_gather)."""
    if not is_distributed():
        return (int(local_size),)
    size = torch.tensor([local_size], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return tuple(int(s.item()) for s in sizes)


def _gather_padded(tensor: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """all_gather of `tensor` (dim 0 may differ per rank) -> one tensor per rank, padding removed."""
    max_size = max(sizes)
    padded = tensor.contiguous()
    if tensor.shape[0] < max_size:
        filler = tensor.new_zeros((max_size - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([padded, filler], dim=0)
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded)
    return [buffer[:size] for buffer, size in zip(buffers, sizes)]


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's tensor. Backward: sum the gradients over ranks, keep the own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        pieces = _gather_padded(tensor, sizes)
        pieces[rank] = tensor
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def all_gather_with_grad(tensor: torch.Tensor, sizes: tuple[int, ...] | None = None) -> torch.Tensor:
    """Concatenate `tensor` `(B_r, ...)` of all ranks into `(sum_r B_r, ...)`, differentiable.

    Rows `[sum(sizes[:rank]), sum(sizes[:rank + 1]))` are this rank's own tensor. Every rank must call it
    (and later run backward through it) in the same order. Outside a multi-process run: returns `tensor`.
    """
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], tensor.device)
    return _AllGatherWithGrad.apply(tensor, tuple(sizes), dist.get_rank())


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor, sizes: tuple[int, ...] | None = None) -> torch.Tensor:
    """Concatenate `tensor` `(B_r, ...)` of all ranks into `(sum_r B_r, ...)` without gradient (ids, labels)."""
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], tensor.device)
    return torch.cat(_gather_padded(tensor, tuple(sizes)), dim=0)


__all__ = ["all_gather_no_grad", "all_gather_with_grad", "gather_sizes", "is_distributed", "world_size_and_rank"]
