"""The authors' CLEFT checkpoints (PyTorch-Lightning files of the reference code): read safely, their layout, and
their state-dict keys mapped to `CLEFTModel`'s.

Reference keys (stage 1; stage 2 wraps the text tower in one more `base_model.` and adds the prompt context):

    img_encoder_q.model.*                      torch.hub DINOv2-reg ViT -> vision_model.* (timm's DINOv2 import)
    img_encoder_q.global_embed.*               -> visual_projection.* (Linear with bias, or the MLP head.*)
    text_encoder_q.model.base_model.model.transformer.*   GPT-2 under peft LoRA -> text_model.base_model.model.*
    text_encoder_q.global_embed.*              -> text_projection.*
    logit_scale                                0-d -> logit_scale (1,)
    text_encoder_q.model.prompt_encoder.default.embedding.weight   stage 2: the learned context (n_ctx, hidden)
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import pickle
import re
from typing import Any
import zipfile

import torch

VISION_PREFIX = "img_encoder_q.model."
TEXT_PREFIXES = {
    1: "text_encoder_q.model.base_model.model.transformer.",
    2: "text_encoder_q.model.base_model.base_model.model.transformer.",
}
PROMPT_KEY = "text_encoder_q.model.prompt_encoder.default.embedding.weight"
WORD_EMBEDDINGS_ALIAS = "text_encoder_q.model.word_embeddings.weight"  # stage 2: the same tensor as wte
PROJECTION_PREFIXES = {
    "img_encoder_q.global_embed.": "visual_projection.",
    "text_encoder_q.global_embed.": "text_projection.",
}
# Keys of the files that no forward of the reference uses (local embeddings, the final ViT norm that mean pooling
# skips, GPT-2's causal-mask buffers of older transformers); DINOv2's unused mask token is dropped by timm's import.
UNUSED_KEYS = re.compile(
    r"^(img|text)_encoder_q\.local_embed\.|^img_encoder_q\.model\.(norm|head)\.\w+$"
    r"|\.attn\.(masked_)?bias$"
)
# peft's LoRA defaults in the reference code (not stored in the file): alpha 32, dropout 0.1.
REFERENCE_LORA_ALPHA = 32
REFERENCE_LORA_DROPOUT = 0.1
DINOV2_HEAD_DIM = 64  # every DINOv2 ViT (S/B/L/g) has 64-d attention heads: the head count is width / 64


class ConversionError(ValueError):
    """A checkpoint (or a conversion argument) this converter refuses; the message names the problem."""


@dataclass
class ReferenceLayout:
    """What the tensors of a reference checkpoint say about the model that wrote them."""

    stage: int
    text_prefix: str
    vision_kwargs: dict[str, Any]  # timm kwargs of `vit_base_patch14_reg4_dinov2` giving this ViT's sizes
    reference_image_size: int  # the position grid's image size (518 px for ViT-B/14: 37 x 37 patches)
    text_sizes: dict[str, int]  # n_layer, n_embd, vocab_size, n_positions
    lora_rank: int
    lora_targets: list[str]
    projection_head: str
    projection_dim: int
    num_context_tokens: int | None
    dtype: torch.dtype


def load_reference_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, read with `torch.load(weights_only=True)`: a file that needs any other type than
    tensors and plain containers is refused (nothing from the file runs), as are truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist (give the .ckpt file the authors published)")
    try:
        with zipfile.ZipFile(path) as archive:  # torch.save's format; a truncated file has no central directory
            archive.namelist()
    except zipfile.BadZipFile:
        raise ConversionError(
            f"checkpoint {path} is not a complete torch.save file (truncated or another format)"
        ) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        needs = f"the type {found.group(1)}" if found else "types other than tensors and plain containers"
        raise ConversionError(
            f"checkpoint {path} needs {needs} to load; it is refused (it would run code from "
            "the file: the authors' checkpoints hold only tensors and plain values)"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise ConversionError(f"checkpoint {path} cannot be read ({' '.join(str(error).split())[:200]})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConversionError(f"checkpoint {path} is not a PyTorch-Lightning checkpoint (no 'state_dict')")
    return checkpoint


def _require(state_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ConversionError(
            f"not a CLEFT checkpoint of the reference code: it has no {key!r} (DINOv2 ViT + "
            "GPT-2-family LLM under LoRA)"
        )
    return state_dict[key]


def inspect_reference_state_dict(state_dict: dict[str, torch.Tensor]) -> ReferenceLayout:
    """Stage and tower sizes from the tensors (a tiny checkpoint of the same layout reads like the real one)."""
    stage = 2 if PROMPT_KEY in state_dict else 1
    text_prefix = TEXT_PREFIXES[stage]
    pos_embed = _require(state_dict, VISION_PREFIX + "pos_embed")
    patch = _require(state_dict, VISION_PREFIX + "patch_embed.proj.weight")
    registers = _require(state_dict, VISION_PREFIX + "register_tokens")
    wte = _require(state_dict, text_prefix + "wte.weight")
    if any(".mlp.w12." in key for key in state_dict):
        raise ConversionError("this checkpoint's ViT uses SwiGLU blocks (DINOv2 giant): not supported")
    width = int(pos_embed.shape[-1])
    grid = round((pos_embed.shape[1] - 1) ** 0.5)
    if grid * grid != pos_embed.shape[1] - 1:
        raise ConversionError(f"position embeddings {tuple(pos_embed.shape)} are not 1 + a square grid")
    depth = len({key.split(".")[3] for key in state_dict if key.startswith(VISION_PREFIX + "blocks.")})
    fc1 = _require(state_dict, VISION_PREFIX + "blocks.0.mlp.fc1.weight")
    vision_kwargs = {
        "embed_dim": width,
        "depth": depth,
        "num_heads": max(1, width // DINOV2_HEAD_DIM),
        "patch_size": int(patch.shape[-1]),
        "reg_tokens": int(registers.shape[1]),
        "mlp_ratio": fc1.shape[0] / width,
    }
    lora = sorted(key for key in state_dict if key.startswith(text_prefix) and ".lora_A." in key)
    if not lora:
        raise ConversionError("this checkpoint's text tower has no LoRA adapter (only peft 'lora' is supported)")
    layers = len({key[len(text_prefix) :].split(".")[1] for key in state_dict if key.startswith(text_prefix + "h.")})
    text_sizes = {
        "n_layer": layers,
        "n_embd": int(wte.shape[1]),
        "vocab_size": int(wte.shape[0]),
        "n_positions": int(_require(state_dict, text_prefix + "wpe.weight").shape[0]),
    }
    head = "mlp" if "img_encoder_q.global_embed.head.0.weight" in state_dict else "linear"
    last = "img_encoder_q.global_embed." + ("head.3.weight" if head == "mlp" else "weight")
    context = state_dict.get(PROMPT_KEY)
    return ReferenceLayout(
        stage=stage,
        text_prefix=text_prefix,
        vision_kwargs=vision_kwargs,
        reference_image_size=grid * vision_kwargs["patch_size"],
        text_sizes=text_sizes,
        lora_rank=int(state_dict[lora[0]].shape[0]),
        lora_targets=sorted({key.split(".lora_A.")[0].split(".")[-1] for key in lora}),
        projection_head=head,
        projection_dim=int(_require(state_dict, last).shape[0]),
        num_context_tokens=None if context is None else int(context.shape[0]),
        dtype=wte.dtype,
    )


def _canonical(key: str) -> str:
    """A PEFT-wrapped key without peft's `base_layer.` (peft 0.6 wrote none)."""
    return key.replace(".base_layer.", ".")


def map_reference_state_dict(
    state_dict: dict[str, torch.Tensor], layout: ReferenceLayout, model: Any
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Reference tensors -> `(state dict of model's keys, learned context or None)`; the vision tensors are
    float32 (DINOv2 -> timm: registers, class position folded into the class token, position grid resized to
    the model's by timm with bicubic antialiased interpolation in float32, as the reference's hub DINOv2-reg
    builder does at 224 px), the others keep their dtype. Every key of the file is used or known to be unused."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    wanted = model.state_dict()
    text_keys = {
        _canonical(key[len("text_model.base_model.model.") :]): key
        for key in wanted
        if key.startswith("text_model.base_model.model.")
    }
    mapped: dict[str, torch.Tensor] = {}
    vision: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        if UNUSED_KEYS.search(key) or key in (PROMPT_KEY, WORD_EMBEDDINGS_ALIAS):
            continue
        if key.startswith(VISION_PREFIX):
            vision[key[len(VISION_PREFIX) :]] = tensor.float()
        elif key.startswith(layout.text_prefix) and key[len(layout.text_prefix) :] in text_keys:
            mapped[text_keys[key[len(layout.text_prefix) :]]] = tensor
        elif key == "logit_scale":
            mapped["logit_scale"] = tensor.reshape(1)
        elif prefix := next((p for p in PROJECTION_PREFIXES if key.startswith(p)), None):
            mapped[PROJECTION_PREFIXES[prefix] + key[len(prefix) :]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"checkpoint has {len(unknown)} key(s) this converter does not know, e.g. "
            f"{unknown[:3]}: not a CLEFT checkpoint of the reference code's layout"
        )
    mapped.update({f"vision_model.{k}": v for k, v in checkpoint_filter_fn(vision, model.vision_model).items()})
    mapped.setdefault("logit_bias", torch.zeros(1))
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(wanted[k].shape)}"
        for k, v in mapped.items()
        if k in wanted and v.shape != wanted[k].shape
    ]
    extra = sorted(set(mapped) - set(wanted))
    if mismatched or extra:
        raise ConversionError(f"checkpoint tensors do not fit the model built from them: {(mismatched + extra)[:3]}")
    return mapped, state_dict.get(PROMPT_KEY)


__all__ = [
    "ConversionError",
    "ReferenceLayout",
    "inspect_reference_state_dict",
    "load_reference_checkpoint",
    "map_reference_state_dict",
]
