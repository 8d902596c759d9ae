"""Analytic FLOPs of one CLEFT training step (GPT-2-family LLM with LoRA + timm ViT), recomputation included.

Counts matrix multiplications at 2 FLOPs per multiply-add (the MFU convention; norms, softmax and activations
are left out). What a step computes:
- vision tower (fully trained): forward, backward = input and weight gradients (2x forward) except the patch
  embedding (weight gradient only: pixels need none);
- LLM (frozen base, LoRA trained): forward; backward = input gradients of the base layers (1x forward; none for
  layer 0's `c_attn` when its input, the frozen embeddings, needs no gradient), attention 2x forward, LoRA
  weight and input gradients;
- gradient checkpointing: one more forward of every block / layer in the backward pass. torch's non-reentrant
  checkpoint stops recomputing once backward has what it needs, so a block's last matmul (MLP output) is not
  recomputed unless a dropout after it needs its output (GPT-2's `resid_pdrop`); transformers also makes the
  embeddings' output require grad, so layer 0's `c_attn` input gradient is then computed;
- projections (trained) and the similarity logits.
`tests/test_flops.py` checks the count against `torch.utils.flop_counter.FlopCounterMode` on a real step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .modeling import CLEFTConfig
from .modeling.modeling_cleft import build_vision_tower

# LoRA-able GPT-2 modules: (fan-in, fan-out) in units of the hidden size d and the MLP width f.
_GPT2_MODULES = {"c_attn": [("d", "3d")], "c_proj": [("d", "d"), ("f", "d")], "c_fc": [("d", "f")]}


@dataclass
class StepFlops:
    """FLOPs of one training step, by tower and pass."""

    vision_forward: float
    vision_backward: float
    vision_recompute: float
    text_forward: float
    text_backward: float
    text_recompute: float
    head: float  # projections' backward and the logits (forward + backward); projections' forward is in the towers

    @property
    def total(self) -> float:
        return (
            self.vision_forward
            + self.vision_backward
            + self.vision_recompute
            + self.text_forward
            + self.text_backward
            + self.text_recompute
            + self.head
        )


def _vit_dims(config: CLEFTConfig) -> dict[str, int]:
    with torch.device("meta"):
        tower = build_vision_tower(config)
    if not hasattr(tower, "blocks") or not hasattr(tower, "patch_embed"):
        raise ValueError(f"analytic FLOPs cover timm ViTs only, not {config.vision_model_name!r}")
    patch = tower.patch_embed.proj
    last_dropout = getattr(tower.blocks[0].mlp, "drop2", None)
    return {
        "output_dropout": float(getattr(last_dropout, "p", 0.0)),
        "patches": tower.patch_embed.num_patches,
        "tokens": tower.patch_embed.num_patches + tower.num_prefix_tokens,
        "width": tower.embed_dim,
        "depth": len(tower.blocks),
        "mlp": tower.blocks[0].mlp.fc1.out_features,
        "patch_in": patch.in_channels * patch.kernel_size[0] * patch.kernel_size[1],
    }


def training_step_flops(
    config: CLEFTConfig, batch_size: int, text_length: int, gradient_checkpointing: bool = True
) -> StepFlops:
    """FLOPs of one stage-1 step on `batch_size` image-text pairs of `text_length` tokens (one process)."""
    text = config.text_config
    if text.model_type != "gpt2" or config.peft_config["peft_type"] != "LORA":
        raise ValueError("analytic FLOPs cover GPT-2-family LLMs with LoRA (the paper's BioMedLM set-up)")
    v = _vit_dims(config)
    n_img, n, width = batch_size, v["tokens"], v["width"]
    patch = 2 * n_img * v["patches"] * v["patch_in"] * width
    blocks = v["depth"] * (2 * n_img * n * (4 * width * width + 2 * width * v["mlp"]) + 4 * n_img * n * n * width)
    projection_dim = config.projection_dim
    vision_projection = 2 * n_img * width * projection_dim
    mlp_out = 2 * n_img * n * v["mlp"] * width  # last matmul of a block, skipped by the recomputation
    vision_recompute = v["depth"] * (blocks // v["depth"] - (mlp_out if v["output_dropout"] == 0 else 0))

    d, layers = text.n_embd, text.n_layer
    f = text.n_inner or 4 * d
    tokens = batch_size * text_length
    base = 2 * tokens * (4 * d * d + 2 * d * f)  # c_attn (3d^2) + c_proj (d^2) + MLP per layer
    attention = 4 * batch_size * text_length * text_length * d
    size = {"d": d, "3d": 3 * d, "f": f}
    rank = config.peft_config["r"]
    adapted = [(size[a], size[b]) for name in config.peft_config["target_modules"] for a, b in _GPT2_MODULES[name]]
    lora = sum(2 * tokens * rank * (fan_in + fan_out) for fan_in, fan_out in adapted)
    c_attn_input = 2 * tokens * d * 3 * d
    c_attn_lora_input = 2 * tokens * rank * d if "c_attn" in config.peft_config["target_modules"] else 0
    text_projection = 2 * batch_size * d * projection_dim
    layer_forward = base + attention + lora
    text_mlp_out = 2 * tokens * f * d if not text.resid_pdrop else 0  # kept when dropout needs its output
    text_recompute = layers * (layer_forward - text_mlp_out)
    layer0_skipped = 0 if gradient_checkpointing else c_attn_input + c_attn_lora_input

    logits = 2 * batch_size * batch_size * projection_dim
    return StepFlops(
        vision_forward=patch + blocks + vision_projection,
        vision_backward=patch + 2 * blocks,
        vision_recompute=vision_recompute if gradient_checkpointing else 0,
        text_forward=layers * layer_forward + text_projection,
        # base input grads + attention 2x + LoRA 2x (weight grads; grads into A's output and into the input)
        text_backward=layers * (base + 2 * attention + 2 * lora) - layer0_skipped,
        text_recompute=text_recompute if gradient_checkpointing else 0,
        # logits: forward's similarity matrix + clip_loss's two directions, backward through those two
        head=2 * (vision_projection + text_projection) + 7 * logits,
    )


__all__ = ["StepFlops", "training_step_flops"]
