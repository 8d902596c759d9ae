"""Tiny checkpoints in the exact layout of the authors' CLEFT files (PyTorch-Lightning, reference code keys), for
the converter's tests and the README's demo twin.

    python -m cleft_hf.demo.reference_checkpoint --output_dir outputs/reference-demo [--chexpert_images 600]

writes `llm/` (a tiny GPT-2 config + a tokenizer trained on the fly: what `--text_model_name_or_path` gives the
converter), `stage1.ckpt` and `stage2.ckpt` (bf16, as the authors trained with `--precision bf16-true`). The
tensors are random (non-zero biases, LoRA B != 0, LayerScale, BatchNorm statistics) with the shapes the layout
has: a DINOv2-reg ViT (patch 14, 4 registers, 518-px position grid) and a GPT-2 under LoRA (r 8 on `c_attn`).
`reference_state_dict(...)` builds the same dict at any size, on any device (the meta device for the real
ViT-B/14-reg + BioMedLM shapes).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

TINY_VISION = {"width": 128, "depth": 2, "patch": 14, "grid": 37, "registers": 4}
TINY_TEXT = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 128}
REAL_VISION = {"width": 768, "depth": 12, "patch": 14, "grid": 37, "registers": 4}
CORPUS_LEADS = ("this is a chest x ray of a patient with", "findings consistent with", "there is no", "x")
CORPUS_FINDINGS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural effusion", "no finding")


def _vision_shapes(width: int, depth: int, patch: int, grid: int, registers: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, 1 + grid * grid, width),
        "mask_token": (1, width),
        "register_tokens": (1, registers, width),
        "patch_embed.proj.weight": (width, 3, patch, patch),
        "patch_embed.proj.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    for i in range(depth):
        for name, shape in {
            "norm1.weight": (width,),
            "norm1.bias": (width,),
            "attn.qkv.weight": (3 * width, width),
            "attn.qkv.bias": (3 * width,),
            "attn.proj.weight": (width, width),
            "attn.proj.bias": (width,),
            "ls1.gamma": (width,),
            "norm2.weight": (width,),
            "norm2.bias": (width,),
            "mlp.fc1.weight": (4 * width, width),
            "mlp.fc1.bias": (4 * width,),
            "mlp.fc2.weight": (width, 4 * width),
            "mlp.fc2.bias": (width,),
            "ls2.gamma": (width,),
        }.items():
            shapes[f"blocks.{i}.{name}"] = shape
    return shapes


def _text_shapes(n_layer: int, n_embd: int, vocab_size: int, n_positions: int, rank: int) -> dict[str, tuple]:
    """GPT-2 under peft 0.6 LoRA on `c_attn` (Conv1D weights are (in, out); no `base_layer.`)."""
    shapes = {
        "wte.weight": (vocab_size, n_embd),
        "wpe.weight": (n_positions, n_embd),
        "ln_f.weight": (n_embd,),
        "ln_f.bias": (n_embd,),
    }
    for i in range(n_layer):
        for name, shape in {
            "ln_1.weight": (n_embd,),
            "ln_1.bias": (n_embd,),
            "attn.c_attn.weight": (n_embd, 3 * n_embd),
            "attn.c_attn.bias": (3 * n_embd,),
            "attn.c_attn.lora_A.default.weight": (rank, n_embd),
            "attn.c_attn.lora_B.default.weight": (3 * n_embd, rank),
            "attn.c_proj.weight": (n_embd, n_embd),
            "attn.c_proj.bias": (n_embd,),
            "ln_2.weight": (n_embd,),
            "ln_2.bias": (n_embd,),
            "mlp.c_fc.weight": (n_embd, 4 * n_embd),
            "mlp.c_fc.bias": (4 * n_embd,),
            "mlp.c_proj.weight": (4 * n_embd, n_embd),
            "mlp.c_proj.bias": (n_embd,),
        }.items():
            shapes[f"h.{i}.{name}"] = shape
    return shapes


def _projection_shapes(in_features: int, out_features: int, head: str) -> dict[str, tuple[int, ...]]:
    if head == "linear":
        return {"weight": (out_features, in_features), "bias": (out_features,)}
    hidden = 2048
    return {
        "head.0.weight": (hidden, in_features),
        "head.0.bias": (hidden,),
        "head.1.weight": (hidden,),
        "head.1.bias": (hidden,),
        "head.1.running_mean": (hidden,),
        "head.1.running_var": (hidden,),
        "head.1.num_batches_tracked": (),
        "head.3.weight": (out_features, hidden),
        "head.3.bias": (out_features,),
        "head.4.running_mean": (out_features,),
        "head.4.running_var": (out_features,),
        "head.4.num_batches_tracked": (),
    }


def _random(name: str, shape: tuple[int, ...], generator: torch.Generator | None, device: str) -> torch.Tensor:
    """Random values of a plausible scale for the parameter `name` (meta device: shapes only)."""
    if device == "meta":
        return torch.empty(shape, device="meta", dtype=torch.long if name.endswith("num_batches_tracked") else None)
    if name.endswith("num_batches_tracked"):
        return torch.tensor(100)
    noise = torch.randn(shape, generator=generator)
    if name.endswith(
        ("running_var", "ln_1.weight", "ln_2.weight", "ln_f.weight", "norm1.weight", "norm2.weight", "head.1.weight")
    ):
        return 1.0 + 0.1 * noise.abs() if name.endswith("running_var") else 1.0 + 0.1 * noise
    if name.endswith("gamma"):
        return 0.1 + 0.05 * noise
    if name.endswith(("cls_token", "pos_embed", "register_tokens")):
        return 0.5 * noise
    fan_in = shape[-1] if len(shape) > 1 else 1
    if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
        fan_in = shape[0]  # Conv1D: (in, out)
    if name.endswith("lora_B.default.weight"):
        return 0.2 * noise  # trained LoRA: B != 0
    return noise * (0.5 / fan_in**0.5 if len(shape) > 1 else 0.1)


def reference_state_dict(
    *,
    stage: int = 1,
    vision: dict[str, int] | None = None,
    text: dict[str, int] | None = None,
    vocab_size: int = 400,
    projection_dim: int = 32,
    projection_head: str = "linear",
    rank: int = 8,
    num_context_tokens: int = 30,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, torch.Tensor]:
    """A `state_dict` with the reference code's keys and shapes (stage 1 or 2), random values of `dtype`."""
    vision = {**TINY_VISION, **(vision or {})}
    text = {**TINY_TEXT, **(text or {})}
    generator = torch.Generator().manual_seed(seed) if device != "meta" else None
    text_prefix = "text_encoder_q.model.base_model." + ("base_model." if stage == 2 else "") + "model.transformer."
    shapes: dict[str, tuple] = {}
    shapes.update({f"img_encoder_q.model.{k}": v for k, v in _vision_shapes(**vision).items()})
    shapes.update(
        {
            f"img_encoder_q.global_embed.{k}": v
            for k, v in _projection_shapes(vision["width"], projection_dim, projection_head).items()
        }
    )
    shapes.update({f"img_encoder_q.local_embed.{k}": v for k, v in {"weight": (8, vision["width"])}.items()})
    text_shapes = _text_shapes(text["n_layer"], text["n_embd"], vocab_size, text["n_positions"], rank)
    shapes.update({text_prefix + k: v for k, v in text_shapes.items()})
    shapes.update(
        {
            f"text_encoder_q.global_embed.{k}": v
            for k, v in _projection_shapes(text["n_embd"], projection_dim, projection_head).items()
        }
    )
    shapes["text_encoder_q.local_embed.weight"] = (8, text["n_embd"])
    shapes["logit_scale"] = ()
    if stage == 2:
        shapes["text_encoder_q.model.prompt_encoder.default.embedding.weight"] = (num_context_tokens, text["n_embd"])
    state = {name: _random(name, shape, generator, device) for name, shape in shapes.items()}
    if device != "meta":
        state["logit_scale"] = torch.tensor(5.0 if stage == 1 else 4.8)  # above log(100): no clamp matters
    state = {k: v if v.dtype == torch.long else v.to(dtype) for k, v in state.items()}
    if stage == 2:  # peft's alias of the input embeddings
        state["text_encoder_q.model.word_embeddings.weight"] = state[text_prefix + "wte.weight"]
    return state


def lightning_checkpoint(state_dict: dict[str, torch.Tensor], stage: int, **hyper_parameters: Any) -> dict[str, Any]:
    """The dict Lightning 2.1's ModelCheckpoint saves around `state_dict` (plain values only)."""
    hparams = {
        "llm_type": "gpt",
        "emb_dim": 512,
        "linear_proj": True,
        "pool_feat": True,
        "peft": "lora",
        "img_encoder": "dinov2_vitb14_reg",
        "ctx_length": 30,
        "prompt_ft": stage == 2,
        "precision": "bf16-true",
        **hyper_parameters,
    }
    return {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.1.2",
        "state_dict": state_dict,
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }


def write_tiny_reference_llm(folder: str | Path) -> Path:
    """A tiny GPT-2 config + BPE tokenizer (pad = EOS, no BOS added), as `--text_model_name_or_path`."""
    from transformers import GPT2Config

    from .language_model.tokenizer_training import train_tokenizer

    folder = Path(folder)
    corpus = [
        f"{lead} {finding} {tail}"
        for lead in CORPUS_LEADS
        for finding in CORPUS_FINDINGS
        for tail in ("in the right lower lobe.", "bilaterally.", ".")
    ]
    tokenizer = train_tokenizer(corpus, family="gpt2", vocab_size=400)
    tokenizer.save_pretrained(folder)
    eos = tokenizer.eos_token_id
    GPT2Config(
        n_layer=TINY_TEXT["n_layer"],
        n_embd=TINY_TEXT["n_embd"],
        n_head=TINY_TEXT["n_head"],
        n_positions=TINY_TEXT["n_positions"],
        vocab_size=len(tokenizer),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    ).save_pretrained(folder)
    return folder


def write_reference_checkpoints(
    output_dir: str | Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0, projection_head: str = "linear"
) -> dict[str, Path]:
    """`llm/`, `stage1.ckpt` and `stage2.ckpt` in `output_dir` (stage 2 continues stage 1: same LLM and adapter)."""
    from transformers import AutoTokenizer

    output_dir = Path(output_dir)
    llm = write_tiny_reference_llm(output_dir / "llm")
    vocab_size = len(AutoTokenizer.from_pretrained(llm))
    paths = {"llm": llm}
    stage1 = reference_state_dict(
        stage=1, vocab_size=vocab_size, seed=seed, dtype=dtype, projection_head=projection_head
    )
    stage2 = reference_state_dict(
        stage=2, vocab_size=vocab_size, seed=seed + 1, dtype=dtype, projection_head=projection_head
    )
    for key in list(stage2):  # frozen text side: stage 2 has stage 1's LLM, adapter and text projection
        source = key.replace("base_model.base_model.", "base_model.")
        if key.startswith("text_encoder_q.") and source in stage1 and "prompt_encoder" not in key:
            stage2[key] = stage1[source]
    stage2["text_encoder_q.model.word_embeddings.weight"] = stage1[
        "text_encoder_q.model.base_model.model.transformer.wte.weight"
    ]
    for stage, state in ((1, stage1), (2, stage2)):
        paths[f"stage{stage}"] = output_dir / f"stage{stage}.ckpt"
        torch.save(lightning_checkpoint(state, stage), paths[f"stage{stage}"])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument(
        "--chexpert_images",
        type=int,
        default=0,
        help="also write a CheXpert-like demo tree of this many images into OUTPUT_DIR/chexpert",
    )
    args = parser.parse_args(argv)
    paths = write_reference_checkpoints(args.output_dir, getattr(torch, args.dtype))
    if args.chexpert_images:
        from .synthetic import write_demo_chexpert

        paths["chexpert"] = Path(args.output_dir) / "chexpert"
        write_demo_chexpert(paths["chexpert"], args.chexpert_images)
    print(" ".join(f"{name}={path}" for name, path in paths.items()))


if __name__ == "__main__":
    main()
