"""The paper's model on one GPU: bf16 frozen BioMedLM-size LLM, sdpa, autocast, batch 72 x 256 tokens.

DINOv2 ViT-B/14-reg at 224 px + BioMedLM's config (32 x 2560, vocabulary 28 896), random weights from the
configs (nothing is downloaded), gradient checkpointing, AdamW. Three variants, each in its own process (clean
peak memory): `lora` (CLEFT: LoRA r=8 on c_attn, the base LLM frozen in bf16), `nf4` (the same with the frozen
LLM in 4 bits, `text_quantization` NF4 + double quant, bf16 compute: its random bf16 weights are written to a
temporary folder and loaded quantised, as a user would; needs bitsandbytes), `full` (the whole LLM trained,
float32 masters, as a CLIP with a fully fine-tuned text encoder would) and `bert` (the paper's baseline: the same
ViT + Bio_ClinicalBERT's config cut to 6 layers, trained whole, MLP heads, float32 masters;
`cleft_hf.accounting.bert_clip_config`).

    python benchmarks/gpu_paper_scale.py              # needs a CUDA GPU (~60 GB for `full` at batch 72)
    python benchmarks/gpu_paper_scale.py --tiny       # the same code path with tiny towers, any device

Prints `name=value` lines per variant: images_per_s, step_s, peak_gpu_mem_gb, model_tflop_per_step (analytic,
`cleft_hf.flops`, LoRA variant), gpu_bf16_matmul_tflops (measured in the same process), mfu_pct; then
`full_vs_lora_peak_mem_ratio`, `nf4_vs_lora_peak_mem_ratio`, `lora_vs_bert_peak_mem_ratio`,
`lora_vs_bert_step_time_ratio` and `lora_vs_bert_trainable_ratio`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoModel, AutoModelForCausalLM

from cleft_hf.accounting import bert_clip_config
from cleft_hf.flops import training_step_flops
from cleft_hf.modeling import CLEFTConfig, CLEFTModel
from cleft_hf.training.optim import build_optimizer

VARIANTS = ("lora", "nf4", "full", "bert")
TINY = {
    "vision_model_name": "vit_small_patch16_224",
    "image_size": 32,
    "projection_dim": 32,
    "vision_model_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "reg_tokens": 4},
    "text_config": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 500},
}
TINY_BERT = {
    "model_type": "bert",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 500,
}


def baseline_config(vision_config: CLEFTConfig, tiny: bool) -> CLEFTConfig:
    """The BERT baseline with the vision tower of `vision_config` (tiny: a 2-layer BERT of width 64)."""
    config = bert_clip_config(6, vision_config)
    if tiny:
        config = CLEFTConfig(**{**config.to_dict(), "text_config": TINY_BERT, "text_num_layers": 2})
    return config


def bf16_matmul_tflops(device: torch.device, n: int, repeats: int = 10) -> float:
    """Best bf16 GEMM rate (n x n) @ (n x n) on `device`."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for index in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if index >= 2:  # two warm-up calls
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


NF4 = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_compute_dtype": "bfloat16",
}


def build_nf4(config: CLEFTConfig, device: torch.device) -> CLEFTModel:
    """CLEFT whose frozen LLM (random bf16 weights written to a temporary folder) is loaded in NF4 on `device`."""
    fields = {
        k: v for k, v in config.to_diff_dict().items() if k in ("vision_model_kwargs", "image_size", "projection_dim")
    }
    with tempfile.TemporaryDirectory(prefix="gpu_paper_scale_llm_") as folder:
        AutoModelForCausalLM.from_config(config.text_config, dtype=torch.bfloat16).save_pretrained(folder)
        model = CLEFTModel.from_vision_text_pretrained(
            config.vision_model_name,
            folder,
            vision_pretrained=False,
            dtype=torch.bfloat16,
            attn_implementation="sdpa",
            text_quantization=NF4,
            text_kwargs={"device_map": {"": device}},
            **fields,
        )
    model.to(device).activation_checkpointing_enable()
    return model.train()


def build(config: CLEFTConfig, variant: str, device: torch.device) -> CLEFTModel:
    """CLEFT with a bf16 frozen base LLM (lora), an NF4 one (nf4), a float32 fully trained LLM (full) or the
    BERT baseline (bert, float32), built on `device`."""
    if variant == "nf4":
        return build_nf4(config, device)
    if variant == "bert":  # `config` is the baseline's (`baseline_config`)
        with torch.device(device):
            model = CLEFTModel(config)
        model.activation_checkpointing_enable()
        return model.train()
    dtype = torch.bfloat16 if variant == "lora" else torch.float32
    with torch.device(device):
        language_model = AutoModel.from_config(config.text_config, dtype=dtype, attn_implementation="sdpa")
        model = CLEFTModel(config, text_model=language_model)
    if variant == "full":
        model.text_model.get_base_model().requires_grad_(True)
    model.activation_checkpointing_enable()
    return model.train()


def run_variant(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    config = CLEFTConfig(**TINY) if args.tiny else CLEFTConfig()
    if args.variant == "bert":
        config = baseline_config(config, args.tiny)
    torch.manual_seed(0)
    model = build(config, args.variant, device)
    optimizer = build_optimizer(model)
    pixel_values = torch.randn(args.batch_size, 3, config.image_size, config.image_size, device=device)
    input_ids = torch.randint(0, config.text_config.vocab_size, (args.batch_size, args.text_length), device=device)
    attention_mask = torch.ones_like(input_ids)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(
                pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, return_loss=True
            ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    step_s = (time.perf_counter() - start) / args.steps
    result = {
        "variant": args.variant,
        "trainable_params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "step_s": step_s,
        "images_per_s": args.batch_size / step_s,
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 1024**3
        if device.type == "cuda"
        else float("nan"),
    }
    if args.variant == "lora":
        flops = training_step_flops(config, args.batch_size, args.text_length, gradient_checkpointing=True).total
        rate = bf16_matmul_tflops(device, 256 if args.tiny else 8192)
        result.update(
            model_tflop_per_step=flops / 1e12, gpu_bf16_matmul_tflops=rate, mfu_pct=100 * flops / step_s / 1e12 / rate
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=72)
    parser.add_argument("--text_length", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny towers: checks the code path on any device")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one variant
        print(json.dumps(run_variant(args)))
        return
    if not args.tiny and not args.device.startswith("cuda"):
        raise SystemExit("gpu_paper_scale.py needs a CUDA GPU (or --tiny to check the code path on CPU)")
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        for key, value in results[variant].items():
            if key != "variant":
                print(f"{variant}_{key}={value:.3f}" if isinstance(value, float) else f"{variant}_{key}={value}")
    lora, full = results["lora"]["peak_gpu_mem_gb"], results["full"]["peak_gpu_mem_gb"]
    print(f"full_vs_lora_peak_mem_ratio={full / lora:.2f}")
    bert = results["bert"]
    print(f"lora_vs_bert_peak_mem_ratio={lora / bert['peak_gpu_mem_gb']:.2f}")
    print(f"lora_vs_bert_step_time_ratio={results['lora']['step_s'] / bert['step_s']:.2f}")
    print(f"lora_vs_bert_trainable_ratio={results['lora']['trainable_params_m'] / bert['trainable_params_m']:.3f}")
    print(f"nf4_vs_lora_peak_mem_ratio={results['nf4']['peak_gpu_mem_gb'] / lora:.2f}")


if __name__ == "__main__":
    main()
