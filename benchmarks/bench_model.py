"""Forward+backward(+AdamW step) time and peak memory: small CLEFT with LoRA vs the same LLM fully trainable.

Run: `python benchmarks/bench_model.py` (each variant in its own process; ratios printed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from measure import peak_rss_mb, report, run_variant, time_steps  # noqa: E402

SMALL = {"layers": 8, "hidden": 512, "heads": 8, "vocab": 8000, "batch": 16, "seq": 96, "image": 64}


def build_model(variant: str):
    from transformers import GPT2Config

    from cleft_hf import CLEFTConfig, CLEFTModel
    from cleft_hf.tiny import TINY_VISION_MODEL, tiny_vision_kwargs

    text = GPT2Config(n_layer=SMALL["layers"], n_embd=SMALL["hidden"], n_head=SMALL["heads"],
                      vocab_size=SMALL["vocab"], n_positions=256)
    config = CLEFTConfig(vision_model_name=TINY_VISION_MODEL, vision_model_kwargs=tiny_vision_kwargs(width=192, depth=4),
                         image_size=SMALL["image"], text_config=text.to_dict(), text_model_name_or_path=None)
    torch.manual_seed(0)
    model = CLEFTModel(config)
    if variant == "full":  # the same LLM, every weight trainable (no PEFT savings)
        model.text_model.get_base_model().requires_grad_(True)
    return model.train()


def child(variant: str) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = build_model(variant)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(SMALL["batch"], 3, SMALL["image"], SMALL["image"], generator=generator)
    input_ids = torch.randint(0, SMALL["vocab"], (SMALL["batch"], SMALL["seq"]), generator=generator)
    mask = torch.ones_like(input_ids)
    rss_before = peak_rss_mb()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixel_values=pixels, input_ids=input_ids, attention_mask=mask, return_loss=True).loss.backward()
        optimizer.step()

    seconds = time_steps(step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(json.dumps({"step_s": seconds, "peak_rss_mb": peak_rss_mb(), "train_rss_growth_mb": peak_rss_mb() - rss_before,
                      "trainable_params": trainable}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["lora", "full"])
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.variant)
        return
    print(f"# CLEFT forward+backward+AdamW step, GPT-2 {SMALL['layers']}x{SMALL['hidden']}, batch {SMALL['batch']}, "
          f"{SMALL['seq']} tokens, {SMALL['image']} px, {torch.get_num_threads()} threads available")
    results = {name: run_variant(__file__, name) for name in ("full", "lora")}
    for name, r in results.items():
        print(f"# {name}: {r['trainable_params'] / 1e6:.2f} M trainable parameters")
    report(results, baseline="full")


if __name__ == "__main__":
    main()
