"""The frozen base LLM in fp32 / bf16 / int8 / nf4 (`text_quantization`): its memory, a CLEFT step, the loss.

A BioMedLM-size LLM (GPT-2 family, 2560 wide, vocabulary 28 896; `--layers` of them, 32 = BioMedLM) gets random
weights, written once in bf16 to a temporary folder; each variant then runs in its own process and loads it as a
user would (`CLEFTModel.from_vision_text_pretrained`, the paper's DINOv2 ViT-B/14-reg at 224 px with random
weights, LoRA r=8 on c_attn, gradient checkpointing), and takes AdamW steps on one fixed batch of image-report
pairs. Variants: fp32, bf16 (the frozen LLM in that dtype), int8 (`load_in_8bit`), nf4 (NF4, double quant,
bf16 compute); the unquantised parts of the int8/nf4 LLM (embeddings) are bf16, as on a GPU by default.

    python benchmarks/bench_quantized_llm.py                   # BioMedLM size: ~11 GB of RAM (fp32 variant)
    python benchmarks/bench_quantized_llm.py --layers 2        # full width, fewer layers (slow CPUs)

Prints `name=value` lines per variant: frozen_llm_gb (resident memory the loaded LLM added to the process),
frozen_llm_tensor_gb (bytes of its tensors, quantisation state included), step_s (median of `--steps` training
steps after one warm-up; gradient checkpointing recomputes the LLM), step_s_per_llm_layer, loss (first step),
loss_rel_diff_vs_bf16 and text_embed_cos_vs_bf16 (mean cosine of the text embeddings, same weights and batch);
then frozen_llm_gb_ratio_vs_bf16 per variant. `--analytic` prints the per-GPU memory table instead
(`print_analytic_table`: parameters counted on the meta device, bytes per parameter of each storage, an
activation estimate).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time

import torch

NF4 = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_compute_dtype": "bfloat16",
}
VARIANTS = {
    "fp32": ("float32", None),
    "bf16": ("bfloat16", None),
    "int8": ("bfloat16", {"load_in_8bit": True}),
    "nf4": ("bfloat16", NF4),
}


def resident_gb() -> float:
    """Current resident set size of this process (Linux /proc), GiB, after glibc returned freed heap memory (the
    loader's temporaries) to the system."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


def write_random_llm(folder: Path, layers: int) -> None:
    """A BioMedLM-geometry GPT-2 with `layers` layers and random weights, saved in bf16."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from cleft_hf.modeling.configuration_cleft import BIOMEDLM_CONFIG

    torch.manual_seed(0)
    config = GPT2Config(**{**BIOMEDLM_CONFIG, "n_layer": layers})
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)


def tensor_gb(module: torch.nn.Module) -> float:
    """Bytes of a module's state (4-bit weights with their quantisation state), GiB."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values() if torch.is_tensor(t)) / 1024**3


def run_variant(name: str, folder: Path, args: argparse.Namespace) -> dict:
    from cleft_hf.modeling import CLEFTModel
    from cleft_hf.training.optim import build_optimizer

    dtype, quantization = VARIANTS[name]
    torch.manual_seed(0)
    before = resident_gb()
    model = CLEFTModel.from_vision_text_pretrained(
        "vit_base_patch14_reg4_dinov2.lvd142m",
        str(folder),
        vision_pretrained=False,
        dtype=dtype,
        text_quantization=quantization,
    )
    llm = model.text_model.get_base_model()
    with torch.no_grad():  # tensors still on the memory-mapped file (bf16 from the bf16 file) into process memory,
        for parameter in llm.parameters():  # as moving to a GPU does; the file's mapping then closes
            if type(parameter) is torch.nn.Parameter:
                parameter.data = parameter.data.clone()
    gc.collect()
    vision_gb = tensor_gb(model.vision_model)  # the tower built with it, subtracted from the resident growth
    frozen_llm_gb = resident_gb() - before - vision_gb
    measured = {"frozen_llm_gb": frozen_llm_gb, "frozen_llm_tensor_gb": tensor_gb(llm)}
    if not args.steps:
        return measured
    model.activation_checkpointing_enable()
    model.train()
    optimizer = build_optimizer(model)
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(args.batch_size, 3, 224, 224, generator=generator)
    input_ids = torch.randint(0, 28895, (args.batch_size, args.text_length), generator=generator)
    batch = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    with torch.no_grad():
        model.eval()
        first = model(**batch, return_loss=True)
        model.train()
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[1:])
    return {
        **measured,
        "step_s": step_s,
        "step_s_per_llm_layer": step_s / args.layers,
        "loss": first.loss.item(),
        "text_embeds": first.text_embeds.tolist(),
        "all_step_s": times,
    }


# Bytes per quantised linear weight: int8 adds one float32 scale per output row (~0); NF4 with double quant adds an
# 8-bit absmax per 64 weights and a float32 one per 256 of those (bitsandbytes' block sizes).
LINEAR_BYTES = {"bf16": 2.0, "int8": 1.0, "nf4": 0.5 + 1 / 64 + 4 / (64 * 256)}


def analytic_llms() -> dict:
    """Configs of the LLMs of the table: BioMedLM, meditron-7b (Llama-2-7B geometry), a Llama-2-13B."""
    from transformers import GPT2Config, LlamaConfig

    from cleft_hf.modeling.configuration_cleft import BIOMEDLM_CONFIG

    def llama(layers: int, hidden: int, ffn: int, heads: int) -> LlamaConfig:
        return LlamaConfig(
            num_hidden_layers=layers,
            hidden_size=hidden,
            intermediate_size=ffn,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            vocab_size=32000,
        )

    return {
        "BioMedLM (2.7 B)": GPT2Config(**BIOMEDLM_CONFIG),
        "meditron-7b": llama(32, 4096, 11008, 32),
        "Llama-2-13b": llama(40, 5120, 13824, 40),
    }


def print_analytic_table(batch_size: int, text_length: int) -> None:
    """Per-GPU memory of CLEFT stage 1 (ViT-B/14-reg 224 px trained, LoRA r=8, AdamW, gradient checkpointing of
    both towers, bf16 autocast) for each LLM and storage of its frozen weights. Activations: the checkpointed
    layer inputs (bf16) plus one layer's working set at recomputation, 34 * tokens * width bytes (Korthikanti
    et al. 2022, attention scores left out: sdpa), for both towers. CUDA context and allocator slack not counted."""
    from transformers.pytorch_utils import Conv1D

    from cleft_hf.modeling import CLEFTConfig, CLEFTModel

    print(
        f"| LLM | frozen LLM storage | frozen LLM GiB | trained parts GiB | activations GiB | total GiB "
        f"(batch {batch_size} x {text_length} tokens) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, text_config in analytic_llms().items():
        with torch.device("meta"):
            model = CLEFTModel(CLEFTConfig(text_config=text_config.to_dict()))
        base = model.text_model.get_base_model()
        frozen = {n: p for n, p in base.named_parameters() if not p.requires_grad}  # adapters left out
        linear = sum(
            m.weight.numel()
            for n, m in base.named_modules()  # what bitsandbytes quantises
            if type(m) in (torch.nn.Linear, Conv1D) and "lora_" not in n
        )
        other = sum(p.numel() for p in frozen.values()) - linear
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trained_gib = 16 * trained / 1024**3  # float32 weights, gradients, two AdamW moments
        vision = model.vision_model
        vision_tokens = batch_size * (vision.patch_embed.num_patches + vision.num_prefix_tokens)
        layers, width = text_config.num_hidden_layers, text_config.hidden_size
        text_tokens, vision_width = batch_size * text_length, vision.embed_dim
        activations = (
            2 * text_tokens * width * layers
            + 34 * text_tokens * width
            + 2 * vision_tokens * vision_width * len(vision.blocks)
            + 34 * vision_tokens * vision_width
        )
        activations_gib = activations / 1024**3
        for storage, per_weight in LINEAR_BYTES.items():
            frozen_gib = (per_weight * linear + 2 * other) / 1024**3
            total = frozen_gib + trained_gib + activations_gib
            print(
                f"| {name} | {storage} | {frozen_gib:.2f} | {trained_gib:.2f} | {activations_gib:.2f} | {total:.2f} |"
            )


def print_results(results: dict[str, dict]) -> None:
    reference = results.get("bf16")
    for name, result in results.items():
        for key in ("frozen_llm_gb", "frozen_llm_tensor_gb", "step_s", "step_s_per_llm_layer", "loss"):
            if key in result:
                print(f"{name}_{key}={result[key]:.4f}")
        if reference is not None and name != "bf16":
            print(f"{name}_frozen_llm_gb_ratio_vs_bf16={result['frozen_llm_gb'] / reference['frozen_llm_gb']:.3f}")
            print(
                f"{name}_frozen_llm_tensor_gb_ratio_vs_bf16="
                f"{result['frozen_llm_tensor_gb'] / reference['frozen_llm_tensor_gb']:.3f}"
            )
        if "loss" not in result:
            continue
        print(f"{name}_all_step_s={','.join(f'{t:.1f}' for t in result['all_step_s'])}")
        if reference is not None and name != "bf16":
            rel = abs(result["loss"] - reference["loss"]) / abs(reference["loss"])
            cos = torch.nn.functional.cosine_similarity(
                torch.tensor(result["text_embeds"]), torch.tensor(reference["text_embeds"]), dim=-1
            ).mean()
            print(f"{name}_loss_rel_diff_vs_bf16={rel:.5f}")
            print(f"{name}_text_embed_cos_vs_bf16={cos.item():.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32, help="LLM layers at full width (32: BioMedLM)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: fp32,bf16,int8,nf4")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--text_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up step (0: memory only)")
    parser.add_argument("--analytic", action="store_true", help="print the per-GPU memory table (meta device)")
    parser.add_argument("--gpu_batch_size", type=int, default=72, help="--analytic: images per GPU (paper: 72)")
    parser.add_argument("--gpu_text_length", type=int, default=256, help="--analytic: report tokens (paper: 256)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analytic:
        print_analytic_table(args.gpu_batch_size, args.gpu_text_length)
        return
    if args.child:
        if args.child[0] == "write":
            write_random_llm(Path(args.child[1]), args.layers)
        else:
            print(json.dumps(run_variant(args.child[0], Path(args.child[1]), args)))
        return
    passed = [
        "--layers",
        str(args.layers),
        "--batch_size",
        str(args.batch_size),
        "--text_length",
        str(args.text_length),
        "--steps",
        str(args.steps),
    ]
    with tempfile.TemporaryDirectory(prefix="bench_quantized_llm_") as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, *passed, "--child", "write", folder], check=True)
        print(f"write_random_bf16_llm_s={time.perf_counter() - start:.1f}")
        results = {}
        for name in args.variants.split(","):
            done = subprocess.run(
                [sys.executable, __file__, *passed, "--child", name, folder],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"variant {name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"layers={args.layers} batch={args.batch_size}x{args.text_length}")
        print_results(results)


if __name__ == "__main__":
    main()
