"""Stage-2 step cost: cached image features vs recomputed, and class prompts encoded once per step vs the
reference code's LLM pass per image per class. Ratios measured side by side in one run.

Goals: cached >= 10x faster than recomputed (frozen vision tower). Run: `python benchmarks/bench_prompt_tuning.py`.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from transformers import GPT2Config

sys.path.insert(0, os.path.dirname(__file__))
from measure import time_steps

from cleft_hf import CLEFTConfig, CLEFTModel
from cleft_hf.modeling.loss_cleft import multilabel_bce_prompt_loss

SIZE = {
    "vision": "resnet18",
    "image": 128,
    "batch": 32,
    "classes": 5,
    "class_tokens": 4,
    "context": 30,
    "layers": 4,
    "hidden": 256,
    "vocab": 4000,
}


def build() -> CLEFTModel:
    text = GPT2Config(
        n_layer=SIZE["layers"], n_embd=SIZE["hidden"], n_head=4, vocab_size=SIZE["vocab"], n_positions=128
    )
    torch.manual_seed(0)
    ids = torch.randint(0, SIZE["vocab"], (SIZE["classes"], SIZE["class_tokens"])).tolist()
    prompts = {"class_names": [f"class {i}" for i in range(SIZE["classes"])], "prompt_class_token_ids": ids}
    config = CLEFTConfig(
        vision_model_name=SIZE["vision"],
        image_size=SIZE["image"],
        text_config=text.to_dict(),
        text_model_name_or_path=None,
        prompt_num_context_tokens=SIZE["context"],
        prompt_sets={"bench": prompts},
        active_prompt_set="bench",
    )
    model = CLEFTModel(config)
    model.configure_for_prompt_tuning(freeze_vision=True)
    model.train()
    model.text_model.eval()
    return model


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = build()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(SIZE["batch"], 3, SIZE["image"], SIZE["image"], generator=generator)
    labels = (torch.rand(SIZE["batch"], SIZE["classes"], generator=generator) > 0.7).float()
    with torch.no_grad():
        cached = F.normalize(model.get_image_features(pixels), dim=-1)

    def update(logits: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        multilabel_bce_prompt_loss(logits, labels).backward()  # logits include the model's logit_bias
        optimizer.step()

    def recomputed() -> None:
        update(model(pixel_values=pixels, use_learned_prompts=True).logits_per_image)

    def cached_step() -> None:
        update(model(image_embeds=cached, use_learned_prompts=True).logits_per_image)

    ids, mask = model.stored_class_inputs()

    def per_image_per_class() -> None:  # the reference code: one LLM pass per image per class
        rows = []
        for image in cached:
            row = [
                F.normalize(model.get_prompt_features(ids[c : c + 1], mask[c : c + 1], torch.tensor([c])), dim=-1)[0]
                for c in range(ids.shape[0])
            ]
            rows.append(model.similarity_logits(image[None], torch.stack(row))[0])
        update(torch.stack(rows))

    times = {
        "recomputed image features": time_steps(recomputed, warmup=1, repeats=5),
        "cached image features": time_steps(cached_step, warmup=1, repeats=5),
        "per-image-per-class prompts (cached images)": time_steps(per_image_per_class, warmup=1, repeats=3),
    }
    print(
        f"# stage-2 step: {SIZE['vision']} at {SIZE['image']} px (frozen), batch {SIZE['batch']}, "
        f"{SIZE['classes']} classes, {SIZE['context']} context tokens, LLM {SIZE['layers']}x{SIZE['hidden']}"
    )
    print("| variant | step time (s) |\n|---|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.4f} |")
    cached_s = times["cached image features"]
    print(f"speedup_cached_vs_recomputed={times['recomputed image features'] / cached_s:.2f}")
    print(
        f"speedup_batched_prompts_vs_per_image_loop={times['per-image-per-class prompts (cached images)'] / cached_s:.2f}"
    )


if __name__ == "__main__":
    main()
