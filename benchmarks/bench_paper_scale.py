"""The paper's model, built from configs only and stepped on CPU in float32.

DINOv2 ViT-B/14 with registers at 224 px + BioMedLM's config (GPT-2 family, 32 x 2560, vocabulary 28 896), random
weights (nothing is downloaded), LoRA r=8 on `c_attn`, gradient checkpointing on both towers, AdamW on the
trainable parameters; `--steps` training steps on `--batch_size` image-report pairs of `--text_length` tokens.

    python benchmarks/bench_paper_scale.py    # ~12 GB of RAM and ~10 min on 2 cores

Prints `name=value` lines: trainable_params_m, peak_rss_gb (whole process), step_s (the fastest step: on a
shared machine the others are slowed by other processes; every step's time is printed too),
model_tflop_per_step (analytic, `cleft_hf.flops`, recomputation included), cpu_matmul_gflops (float32 GEMM
rate measured in this process, best of the square and the step's largest shape) and mfu_pct.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from cleft_hf.flops import training_step_flops
from cleft_hf.modeling import CLEFTConfig, CLEFTModel
from cleft_hf.training.optim import build_optimizer


def matmul_gflops(m: int, k: int, n: int, repeats: int = 3) -> float:
    """Best float32 GEMM rate `(m, k) @ (k, n)` over `repeats` timed calls (after one warm-up call)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--text_length", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)

    config = CLEFTConfig()  # the paper's configuration is the default: ViT-B/14-reg 224 px, BioMedLM, LoRA r=8
    start = time.perf_counter()
    model = CLEFTModel(config)  # random weights, float32
    model.activation_checkpointing_enable()
    model.train()
    build_s = time.perf_counter() - start
    optimizer = build_optimizer(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    pixel_values = torch.randn(args.batch_size, 3, config.image_size, config.image_size)
    input_ids = torch.randint(0, config.text_config.vocab_size, (args.batch_size, args.text_length))
    attention_mask = torch.ones_like(input_ids)
    step_times, phase_times, losses = [], [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model(
            pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, return_loss=True
        ).loss
        forward_end = time.perf_counter()
        loss.backward()
        backward_end = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - start)
        phase_times.append((forward_end - start, backward_end - forward_end, step_times[-1] - backward_end + start))
        losses.append(loss.item())

    flops = training_step_flops(config, args.batch_size, args.text_length, gradient_checkpointing=True)
    d, f = config.text_config.n_embd, 4 * config.text_config.n_embd
    tokens = args.batch_size * args.text_length
    rate = max(matmul_gflops(2048, 2048, 2048), matmul_gflops(tokens, d, f))
    step_s = min(step_times)
    print(f"threads={torch.get_num_threads()}")
    print(f"load_average_1min={os.getloadavg()[0]:.2f}")
    print(f"build_s={build_s:.1f}")
    print(f"loss={losses[-1]:.4f}")
    print(f"trainable_params_m={trainable / 1e6:.2f}")
    print(f"total_params_m={sum(p.numel() for p in model.parameters()) / 1e6:.2f}")
    print(f"step_times_s={','.join(f'{t:.1f}' for t in step_times)}")
    print(f"forward_backward_optimizer_s={';'.join(','.join(f'{t:.1f}' for t in phases) for phases in phase_times)}")
    print(f"step_s={step_s:.1f}")
    print(f"peak_rss_gb={peak_rss_gb():.2f}")
    print(f"model_tflop_per_step={flops.total / 1e12:.3f}")
    print(
        f"model_tflop_per_step_vision={(flops.vision_forward + flops.vision_backward + flops.vision_recompute) / 1e12:.3f}"
    )
    print(f"model_tflop_per_step_text={(flops.text_forward + flops.text_backward + flops.text_recompute) / 1e12:.3f}")
    print(f"achieved_gflops={flops.total / step_s / 1e9:.1f}")
    print(f"cpu_matmul_gflops={rate:.1f}")
    print(f"mfu_pct={100 * flops.total / step_s / 1e9 / rate:.1f}")


if __name__ == "__main__":
    main()
