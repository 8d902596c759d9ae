"""Projection heads of CLEFT's two towers into the shared image-text space (one factory for both)."""

from __future__ import annotations

import torch
from torch import nn

PROJECTION_HEADS = ("linear", "mlp")
MLP_HIDDEN_SIZE = 2048


class CLEFTMLPProjection(nn.Module):
    r"""The reference code's MLP head (its `GlobalEmbedding`), `(batch, in_features) -> (batch, projection_dim)`:
    Linear in -> 2048, BatchNorm1d, ReLU, Linear 2048 -> projection_dim, BatchNorm1d without affine.

    Its keys are `head.{0,1,3,4}.*`, as the reference's. The BatchNorms are plain `nn.BatchNorm1d`: statistics per
    process, as in the reference (no SyncBatchNorm under DDP), and a training batch needs at least 2 rows.
    """

    def __init__(self, in_features: int, projection_dim: int, hidden_size: int = MLP_HIDDEN_SIZE):
        super().__init__()
        self.in_features = in_features
        self.head = nn.Sequential(
            nn.Linear(in_features, hidden_size),
            nn.BatchNorm1d(hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, projection_dim),
            nn.BatchNorm1d(projection_dim, affine=False),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Batch statistics only while training a trainable head; a frozen one (the text side in stage 2) uses
        its running statistics, so stage 2's class prompts neither move them nor depend on their batch."""
        if not self.training:
            return self.head(features)
        if not any(p.requires_grad for p in self.parameters()):
            self.head.eval()
            try:
                return self.head(features)
            finally:
                self.head.train()
        if features.shape[0] < 2:
            raise ValueError(
                "projection_head='mlp' (BatchNorm) needs at least 2 examples per training batch and "
                "process: raise per_device_batch_size, or use projection_head 'linear'"
            )
        return self.head(features)


def build_projection(config, in_features: int) -> nn.Module:
    """The projection of one tower: `config.projection_head` "linear" (bias from `config.projection_bias`, none by
    default) or "mlp" (the reference's MLP head, which always has biases)."""
    if config.projection_head == "mlp":
        return CLEFTMLPProjection(in_features, config.projection_dim)
    return nn.Linear(in_features, config.projection_dim, bias=bool(config.projection_bias))


@torch.no_grad()
def init_projection(projection: nn.Module) -> None:
    """Every Linear ~ N(0, in_features^-1/2), biases 0; BatchNorms to identity statistics."""
    for module in projection.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):
            module.reset_parameters()


def project(projection: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """`projection(features)` with the features cast to the projection's dtype."""
    return projection(features.to(next(projection.parameters()).dtype))


__all__ = ["PROJECTION_HEADS", "CLEFTMLPProjection", "build_projection", "init_projection", "project"]
