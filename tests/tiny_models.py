"""Tiny CLEFT configurations (random weights) for the tests: the one tiny ViT and the one tiny LLM config."""

from __future__ import annotations

from typing import Any

from transformers import GPT2Config, LlamaConfig, PretrainedConfig

from cleft_hf import CLEFTConfig

TINY_VISION_MODEL = "vit_small_patch16_224"


def tiny_vision_kwargs(
    patch_size: int = 8, width: int = 64, depth: int = 2, heads: int = 2, reg_tokens: int = 2
) -> dict[str, Any]:
    """timm kwargs shrinking a ViT (with register tokens, as DINOv2-reg) to a CPU-sized model."""
    return {"patch_size": patch_size, "embed_dim": width, "depth": depth, "num_heads": heads, "reg_tokens": reg_tokens}


def tiny_text_config(
    family: str, tokenizer: Any, *, layers: int = 2, hidden: int = 64, heads: int = 4, max_positions: int = 128
) -> PretrainedConfig:
    """A 2-layer GPT-2 or Llama config whose vocabulary and special ids match `tokenizer`."""
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family == "gpt2":
        return GPT2Config(
            n_layer=layers,
            n_embd=hidden,
            n_head=heads,
            n_positions=max_positions,
            vocab_size=len(tokenizer),
            **special,
        )
    if family == "llama":
        return LlamaConfig(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=2 * hidden,
            max_position_embeddings=max_positions,
            vocab_size=len(tokenizer),
            **special,
        )
    raise ValueError(f"family must be 'gpt2' or 'llama', got {family!r}")


def tiny_cleft_config(family: str, tokenizer: Any, *, image_size: int = 32, **overrides: Any) -> CLEFTConfig:
    """A CLEFTConfig with a tiny ViT and a tiny LLM; `overrides` are any CLEFTConfig fields."""
    fields = {
        "vision_model_name": TINY_VISION_MODEL,
        "vision_model_kwargs": tiny_vision_kwargs(),
        "image_size": image_size,
        "text_config": tiny_text_config(family, tokenizer).to_dict(),
        "text_model_name_or_path": None,
        "projection_dim": 32,
        "prompt_num_context_tokens": 4,
    }
    fields.update(overrides)
    return CLEFTConfig(**fields)
