"""CLEFT against the paper's BERT CLIP baseline, measured: built from configs only and stepped on CPU in fp32.

Both are `CLEFTModel`s with random weights from their configs (nothing is downloaded):
- `cleft`: DINOv2 ViT-B/14-reg at 224 px + BioMedLM's config (GPT-2 family, 32 x 2560) with LoRA r=8 on
  `c_attn`, the base LLM frozen, activation checkpointing (the CLEFT recipe);
- `bert`: the same ViT + Bio_ClinicalBERT's config cut to 6 layers, everything trained, MLP heads
  (`cleft_hf.accounting.bert_clip_config`, the recipe of `examples/configs/cxr_bert_clip.yaml`).
Each runs in its own process (clean peak memory): `--steps` AdamW steps on `--batch_size` image-caption pairs
of `--text_length` tokens.

    python benchmarks/bench_paper_comparison.py    # ~11 GB of RAM for cleft, ~10 min on 2 cores
    python benchmarks/bench_paper_comparison.py --tiny   # the same code path with tiny towers (seconds)

Prints `{variant}_{name}=value` lines: trainable_params_m, optimizer_state_gb (AdamW's moments as allocated
after the first step), peak_rss_gb (the variant's process), step_s (fastest step), then
`cleft_vs_bert_trainable_ratio` (paper: 0.61), `cleft_vs_bert_optimizer_state_ratio` and
`cleft_vs_bert_step_time_ratio` (the 2.7 B-parameter forward and backward cost time: > 1 on CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from cleft_hf.accounting import bert_clip_config
from cleft_hf.modeling import CLEFTConfig, CLEFTModel
from cleft_hf.training.optim import build_optimizer

VARIANTS = ("cleft", "bert")
TINY_VISION = {
    "vision_model_name": "vit_small_patch16_224",
    "image_size": 32,
    "projection_dim": 32,
    "vision_model_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "reg_tokens": 4},
}
TINY_TEXT = {
    "cleft": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 500},
    "bert": {
        "model_type": "bert",
        "num_hidden_layers": 3,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 500,
    },
}


def variant_config(variant: str, tiny: bool) -> CLEFTConfig:
    """The configuration of a variant (the paper's sizes, or tiny towers of the same families)."""
    vision = CLEFTConfig(**TINY_VISION, text_config=TINY_TEXT["cleft"]) if tiny else CLEFTConfig()
    if variant == "cleft":
        return vision
    config = bert_clip_config(6, vision)
    if tiny:
        config = CLEFTConfig(**{**config.to_dict(), "text_config": TINY_TEXT["bert"], "text_num_layers": 2})
    return config


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps per parameter (AdamW: step, exp_avg, exp_avg_sq)."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )


def run_variant(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    config = variant_config(args.variant, args.tiny)
    start = time.perf_counter()
    model = CLEFTModel(config).train()  # random weights, float32
    if args.variant == "cleft":
        model.activation_checkpointing_enable()
    build_s = time.perf_counter() - start
    optimizer = build_optimizer(model)
    pixel_values = torch.randn(args.batch_size, 3, config.image_size, config.image_size)
    input_ids = torch.randint(0, config.text_config.vocab_size, (args.batch_size, args.text_length))
    attention_mask = torch.ones_like(input_ids)
    step_times, optimizer_bytes = [], 0
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model(
            pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, return_loss=True
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - start)
        optimizer_bytes = optimizer_bytes or optimizer_state_bytes(optimizer)
    return {
        "trainable_params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "total_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "optimizer_state_gb": optimizer_bytes / 1024**3,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,  # Linux: KiB
        "step_s": min(step_times),
        "step_times_s": ",".join(f"{t:.2f}" for t in step_times),
        "build_s": build_s,
        "loss": float(loss),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--text_length", type=int, default=64, help="caption tokens (the reference's 64)")
    parser.add_argument("--tiny", action="store_true", help="tiny towers: checks the code path in seconds")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one variant
        print(json.dumps(run_variant(args)))
        return
    results = {}
    for variant in VARIANTS:
        done = subprocess.run(
            [sys.executable, __file__, "--variant", variant, *sys.argv[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        for key, value in results[variant].items():
            print(f"{variant}_{key}={value:.3f}" if isinstance(value, float) else f"{variant}_{key}={value}")
    cleft, bert = results["cleft"], results["bert"]
    print(f"cleft_vs_bert_trainable_ratio={cleft['trainable_params_m'] / bert['trainable_params_m']:.3f}")
    print(f"cleft_vs_bert_optimizer_state_ratio={cleft['optimizer_state_gb'] / bert['optimizer_state_gb']:.3f}")
    print(f"cleft_vs_bert_step_time_ratio={cleft['step_s'] / bert['step_s']:.2f}")
    print(f"cleft_vs_bert_peak_rss_ratio={cleft['peak_rss_gb'] / bert['peak_rss_gb']:.2f}")


if __name__ == "__main__":
    main()
