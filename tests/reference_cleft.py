"""The reference code's forward, written independently from its conventions (../shared/cleft-reference-checkpoints.md)
for the converter's tests: plain torch ops on the raw checkpoint tensors, transformers' GPT-2 with manually merged
LoRA weights, and the reference's preprocessing step by step. Nothing here uses cleft-hf's model or converter code.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
import torch
import torch.nn.functional as F
from transformers import AutoConfig, GPT2Model

VISION = "img_encoder_q.model."
MAX_LENGTH = 64
LORA_SCALING = 32 / 8  # peft's alpha / r of the reference's LoRA
CONTEXT_KEY = "text_encoder_q.model.prompt_encoder.default.embedding.weight"


def text_prefix(state: dict) -> str:
    stage2 = CONTEXT_KEY in state
    return "text_encoder_q.model.base_model." + ("base_model." if stage2 else "") + "model.transformer."


# ----------------------------------------------------------------------------------------------------- vision
def vit_features(state: dict, pixels: torch.Tensor) -> torch.Tensor:
    """DINOv2-reg ViT as torch.hub runs it at 224 px (bicubic antialiased grid, registers after the position
    embedding), then the mean of all final tokens before the last LayerNorm -> `(batch, width)`."""
    s = {k[len(VISION) :]: v.float() for k, v in state.items() if k.startswith(VISION)}
    weight = s["patch_embed.proj.weight"]
    width, patch = weight.shape[0], weight.shape[-1]
    heads = width // 64
    x = F.conv2d(pixels, weight, s["patch_embed.proj.bias"], stride=patch)
    grid_h, grid_w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    pos = s["pos_embed"]
    side = int(math.sqrt(pos.shape[1] - 1))
    patch_pos = pos[:, 1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", antialias=True)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, width)
    batch = x.shape[0]
    x = torch.cat([s["cls_token"].expand(batch, -1, -1) + pos[:, :1], x + patch_pos], dim=1)
    x = torch.cat([x[:, :1], s["register_tokens"].expand(batch, -1, -1), x[:, 1:]], dim=1)
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(depth):
        b = {k[len(f"blocks.{i}.") :]: v for k, v in s.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (width,), b["norm1.weight"], b["norm1.bias"], eps=1e-6)
        qkv = (h @ b["attn.qkv.weight"].t() + b["attn.qkv.bias"]).reshape(batch, -1, 3, heads, width // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-1, -2)) / math.sqrt(width // heads)).softmax(dim=-1)
        h = (attention @ v).transpose(1, 2).reshape(batch, -1, width)
        x = x + b["ls1.gamma"] * (h @ b["attn.proj.weight"].t() + b["attn.proj.bias"])
        h = F.layer_norm(x, (width,), b["norm2.weight"], b["norm2.bias"], eps=1e-6)
        h = F.gelu(h @ b["mlp.fc1.weight"].t() + b["mlp.fc1.bias"]) @ b["mlp.fc2.weight"].t() + b["mlp.fc2.bias"]
        x = x + b["ls2.gamma"] * h
    return x.mean(dim=1)


def project(state: dict, tower: str, features: torch.Tensor) -> torch.Tensor:
    """`global_embed`: Linear with bias, or the MLP head (eval-mode BatchNorms)."""
    p = {
        k[len(f"{tower}.global_embed.") :]: v.float()
        for k, v in state.items()
        if k.startswith(f"{tower}.global_embed.")
    }
    if "weight" in p:
        return features @ p["weight"].t() + p["bias"]
    h = features @ p["head.0.weight"].t() + p["head.0.bias"]
    h = (h - p["head.1.running_mean"]) / torch.sqrt(p["head.1.running_var"] + 1e-5)
    h = h * p["head.1.weight"] + p["head.1.bias"]
    h = torch.relu(h) @ p["head.3.weight"].t() + p["head.3.bias"]
    return (h - p["head.4.running_mean"]) / torch.sqrt(p["head.4.running_var"] + 1e-5)


def image_embeddings(state: dict, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(project(state, "img_encoder_q", vit_features(state, pixels)), dim=-1)


# ----------------------------------------------------------------------------------------------------- text
def merged_gpt2(state: dict, llm_dir) -> GPT2Model:
    """transformers' GPT-2 holding the checkpoint's LLM with LoRA merged by hand: W += (B A)^T alpha / r."""
    prefix = text_prefix(state)
    inner = {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
    merged = {}
    for key, value in inner.items():
        if ".lora_" in key:
            continue
        if key.endswith("c_attn.weight") and key.replace("weight", "lora_A.default.weight") in inner:
            a = inner[key.replace("weight", "lora_A.default.weight")]
            b = inner[key.replace("weight", "lora_B.default.weight")]
            value = value + (b @ a).t() * LORA_SCALING
        merged[key] = value
    model = GPT2Model._from_config(AutoConfig.from_pretrained(llm_dir), attn_implementation="eager").eval()
    missing, unexpected = model.load_state_dict(merged, strict=False)
    assert not unexpected and all(".attn.bias" in k or "masked_bias" in k for k in missing), (missing, unexpected)
    return model


def _pooled_first_pad(hidden: torch.Tensor, ids: torch.Tensor, eos: int) -> torch.Tensor:
    """The reference's pooled token: index -(number of trailing EOS) of each row (0 when there is none)."""
    rows = []
    for i in range(ids.shape[0]):
        trailing = 0
        while trailing < ids.shape[1] and ids[i, ids.shape[1] - 1 - trailing] == eos:
            trailing += 1
        rows.append(hidden[i, -trailing if trailing else 0])
    return torch.stack(rows)


@torch.no_grad()
def text_embeddings(state: dict, llm_dir, tokenizer, texts: list[str]) -> torch.Tensor:
    """Captions tokenised as the reference (no BOS/EOS added, pad = EOS, right padding to 64, truncation)."""
    batch = tokenizer(
        texts,
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
        add_special_tokens=False,
    )
    hidden = merged_gpt2(state, llm_dir)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    pooled = _pooled_first_pad(hidden, batch["input_ids"], tokenizer.eos_token_id)
    return F.normalize(project(state, "text_encoder_q", pooled), dim=-1)


@torch.no_grad()
def prompt_class_embeddings(state: dict, llm_dir, tokenizer, class_names: list[str]) -> torch.Tensor:
    """Stage 2: `"X " + class.lower()` tokenised, first token dropped, the 30 context vectors before it (mask 1),
    positions 0..29+L, pooled at the first pad after the class tokens."""
    batch = tokenizer(
        ["X " + name.lower() for name in class_names],
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
        add_special_tokens=False,
    )
    ids, mask = batch["input_ids"][:, 1:], batch["attention_mask"][:, 1:]
    model = merged_gpt2(state, llm_dir)
    context = state[CONTEXT_KEY].float()
    n = len(class_names)
    embeds = torch.cat([context.expand(n, -1, -1), model.wte(ids)], dim=1)
    full_mask = torch.cat([torch.ones(n, context.shape[0], dtype=mask.dtype), mask], dim=1)
    hidden = model(inputs_embeds=embeds, attention_mask=full_mask)[0]
    pooled = _pooled_first_pad(
        hidden, torch.cat([torch.zeros(n, context.shape[0], dtype=ids.dtype), ids], 1), tokenizer.eos_token_id
    )
    return F.normalize(project(state, "text_encoder_q", pooled), dim=-1)


def probabilities(state: dict, image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """Softmax over classes of `exp(logit_scale) * cos` (no clamp)."""
    return (state["logit_scale"].float().exp() * image_embeds @ class_embeds.t()).softmax(dim=-1)


# ----------------------------------------------------------------------------------------------------- images
def reference_pixels_integer_scale(grey: np.ndarray) -> torch.Tensor:
    """The reference's evaluation tensor of a uint8 grey image whose longer side is an integer multiple of 256
    and whose shorter side scales to an integer: block means (area interpolation; OpenCV rounds halves up for a
    factor of 2, to even otherwise), centred zero padding, Otsu
    threshold by exhaustive search (pixels above it), bounding-box crop, PIL bilinear 224 x 224, (x - 0.5) / 0.5."""
    height, width = grey.shape
    factor = max(height, width) // 256
    assert factor * 256 == max(height, width) and height % factor == 0 and width % factor == 0
    small = grey.reshape(height // factor, factor, width // factor, factor).astype(np.float64).mean(axis=(1, 3))
    small = (np.floor(small + 0.5) if factor == 2 else np.round(small)).astype(np.uint8)  # OpenCV's rounding
    pad_h, pad_w = 256 - small.shape[0], 256 - small.shape[1]
    boxed = np.zeros((256, 256), np.uint8)
    boxed[pad_h // 2 : pad_h // 2 + small.shape[0], pad_w // 2 : pad_w // 2 + small.shape[1]] = small
    values = boxed.astype(np.float64).ravel()
    best, best_t = -1.0, 0
    for t in range(256):
        low, high = values[values <= t], values[values > t]
        if not len(low) or not len(high):
            continue
        w0, w1 = len(low) / len(values), len(high) / len(values)
        sigma = w0 * w1 * (low.mean() - high.mean()) ** 2
        if sigma > best + 1e-12:
            best, best_t = sigma, t
    rows, cols = np.nonzero(boxed > best_t)
    cropped = boxed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    rgb = Image.fromarray(cropped).convert("RGB").resize((224, 224), Image.BILINEAR)
    tensor = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255.0
    return (tensor - 0.5) / 0.5


def opencv_reference_pixels(grey: np.ndarray) -> torch.Tensor:
    """The reference's evaluation steps run with OpenCV and torchvision (needs `cv2`): INTER_AREA letterbox to
    256, grey -> RGB, OpenCV Otsu crop, torchvision Resize((224, 224)) on the PIL image, ToTensor, Normalize."""
    import cv2
    import torchvision.transforms as T

    height, width = grey.shape
    new_hw = (
        (256, int(float(width) * (256 / float(height))))
        if height >= width
        else (int(float(height) * (256 / float(width))), 256)
    )
    small = cv2.resize(grey, new_hw[::-1], interpolation=cv2.INTER_AREA)
    pad_h, pad_w = 256 - new_hw[0], 256 - new_hw[1]
    boxed = np.pad(small, [(pad_h // 2, math.ceil(pad_h / 2)), (pad_w // 2, math.ceil(pad_w / 2))])
    rgb = np.asarray(Image.fromarray(boxed).convert("RGB"))
    _, mask = cv2.threshold(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if mask.any():
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        rgb = rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    transform = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    return transform(Image.fromarray(rgb))
