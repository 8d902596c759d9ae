"""Train-step time and memory: CLEFT with a LoRA LLM vs the same LLM fully trained vs frozen, and vs open_clip.

Variants (each in its own process, one table and the ratios at the end):
- `lora`: CLEFT as the paper trains it (LLM frozen, LoRA on c_attn, vision tower + projections trained);
- `full`: the same model with every LLM weight trainable (what PEFT saves);
- `frozen`: the LLM without any adapter (lower bound of the text-side cost);
- `open_clip`: open_clip's CLIP with the same timm vision tower and an equal-size text transformer, fully
  trained (the usual CLIP baseline).
Goals: LoRA >= 1.3x faster and <= 0.6x training memory of `full`; LoRA <= 1.05x the step time of open_clip.
Run: `python benchmarks/bench_train_step.py` (needs the `[bench]` extra for open_clip).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from measure import peak_rss_mb, report, run_variant, time_steps

# The LLM dominates the parameters, as in CLEFT (2.7 B LLM vs an 86 M ViT); BENCH_SMALL=1 uses an 8x512 LLM
# and batch 32, where activations dominate instead.
SIZE = (
    {"layers": 8, "hidden": 512, "heads": 8, "vocab": 8000, "batch": 32, "seq": 96, "image": 64, "vision": "resnet10t"}
    if os.environ.get("BENCH_SMALL")
    else {
        "layers": 12,
        "hidden": 1024,
        "heads": 16,
        "vocab": 8000,
        "batch": 16,
        "seq": 64,
        "image": 64,
        "vision": "resnet10t",
    }
)


def cleft_model(variant: str):
    from transformers import GPT2Config

    from cleft_hf import CLEFTConfig, CLEFTModel

    text = GPT2Config(
        n_layer=SIZE["layers"], n_embd=SIZE["hidden"], n_head=SIZE["heads"], vocab_size=SIZE["vocab"], n_positions=256
    )
    config = CLEFTConfig(
        vision_model_name=SIZE["vision"],
        image_size=SIZE["image"],
        text_config=text.to_dict(),
        text_model_name_or_path=None,
    )
    model = CLEFTModel(config)
    if variant == "full":
        model.text_model.get_base_model().requires_grad_(True)
    elif variant == "frozen":
        for name, parameter in model.text_model.named_parameters():
            parameter.requires_grad_(False)
    return model


def open_clip_model():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        timm_model_name=SIZE["vision"],
        timm_model_pretrained=False,
        timm_pool="avg",
        timm_proj="linear",
        image_size=SIZE["image"],
    )
    text = CLIPTextCfg(
        context_length=SIZE["seq"],
        vocab_size=SIZE["vocab"],
        width=SIZE["hidden"],
        heads=SIZE["heads"],
        layers=SIZE["layers"],
    )
    return CLIP(embed_dim=512, vision_cfg=vision, text_cfg=text)


def child(variant: str) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(SIZE["batch"], 3, SIZE["image"], SIZE["image"], generator=generator)
    input_ids = torch.randint(0, SIZE["vocab"], (SIZE["batch"], SIZE["seq"]), generator=generator)
    if variant == "open_clip":
        from open_clip.loss import ClipLoss

        model, loss_fn = open_clip_model().train(), ClipLoss()

        def loss_of() -> torch.Tensor:
            image, text, scale = model(pixels, input_ids)
            return loss_fn(image, text, scale)
    else:
        from cleft_hf.modeling.loss_cleft import clip_loss

        model = cleft_model(variant).train()
        mask = torch.ones_like(input_ids)

        def loss_of() -> torch.Tensor:
            out = model(pixel_values=pixels, input_ids=input_ids, attention_mask=mask)
            return clip_loss(out.image_embeds, out.text_embeds, model.logit_scale)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rss_before = peak_rss_mb()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()

    seconds = time_steps(step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "step_s": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "train_rss_growth_mb": peak_rss_mb() - rss_before,
                "trainable_params": trainable,
                "total_params": total,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["lora", "full", "frozen", "open_clip"])
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.variant)
        return
    print(
        f"# train step (forward + backward + AdamW): {SIZE['vision']} at {SIZE['image']} px, GPT-2-style LLM "
        f"{SIZE['layers']}x{SIZE['hidden']} (vocab {SIZE['vocab']}), batch {SIZE['batch']}, {SIZE['seq']} tokens, "
        f"{os.environ.get('BENCH_THREADS', '2')} threads"
    )
    results = {name: run_variant(__file__, name) for name in ("full", "lora", "frozen", "open_clip")}
    for name, r in results.items():
        print(f"# {name}: {r['trainable_params'] / 1e6:.2f} M trainable of {r['total_params'] / 1e6:.2f} M")
    report(results, baseline="full")
    print(f"step_time_ratio_lora_vs_open_clip={results['lora']['step_s'] / results['open_clip']['step_s']:.3f}")


if __name__ == "__main__":
    main()
