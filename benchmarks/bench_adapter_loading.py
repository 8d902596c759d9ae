"""Memory of loading an adapter-only CLEFT checkpoint: the base LLM is loaded once and moved under the adapters.

Saves a random GPT-2-family LLM (`--layers` x `--hidden`, BioMedLM's vocabulary; ~0.73 GB in float32 by default)
with `save_pretrained`, a CLEFT model on it saved adapter-only, then measures in fresh processes the peak RSS
growth of (a) `AutoModel.from_pretrained(llm)` alone and (b) `CLEFTModel.from_pretrained(adapter checkpoint)`.

    python benchmarks/bench_adapter_loading.py

Prints llm_size_gb, llm_load_rss_growth_gb, adapter_load_rss_growth_gb, adapter_load_vs_llm_size (goal <= 1.3)
and adapter_load_vs_llm_load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import resource
import subprocess
import sys
import tempfile

import psutil


def _peak_growth_gb(load) -> float:
    """Peak RSS growth while `load()` runs (this process's RSS before -> its high-water mark after), in GB."""
    before = psutil.Process().memory_info().rss
    kept = load()  # noqa: F841 (kept alive until measured)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (peak - before) / 1e9


def child(kind: str, folder: str) -> None:
    import torch
    from transformers import AutoModel

    from cleft_hf.modeling import CLEFTModel

    torch.set_num_threads(1)
    if kind == "llm":
        growth = _peak_growth_gb(lambda: AutoModel.from_pretrained(folder, dtype=torch.float32))
    else:
        growth = _peak_growth_gb(lambda: CLEFTModel.from_pretrained(folder, dtype=torch.float32))
    print(json.dumps({"growth_gb": growth}))


def run_child(kind: str, folder: Path) -> float:
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} load failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["growth_gb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    from cleft_hf.modeling import CLEFTModel
    from cleft_hf.modeling.configuration_cleft import BIOMEDLM_CONFIG

    with tempfile.TemporaryDirectory() as tmp:
        llm_dir, cleft_dir = Path(tmp) / "llm", Path(tmp) / "cleft"
        text_config = GPT2Config(
            **{**BIOMEDLM_CONFIG, "n_layer": args.layers, "n_embd": args.hidden, "n_head": args.hidden // 64}
        )
        AutoModelForCausalLM.from_config(text_config).save_pretrained(llm_dir)
        model = CLEFTModel.from_vision_text_pretrained(
            "vit_small_patch16_224",
            str(llm_dir),
            vision_pretrained=False,
            image_size=32,
            projection_dim=32,
            vision_model_kwargs={"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "reg_tokens": 4},
        )
        llm_bytes = sum(p.numel() * p.element_size() for p in model.text_model.get_base_model().parameters())
        model.save_pretrained(cleft_dir, save_base_model=False)
        adapter_bytes = sum(f.stat().st_size for f in cleft_dir.glob("*.safetensors"))
        del model
        torch.manual_seed(0)
        llm_growth = run_child("llm", llm_dir)
        adapter_growth = run_child("cleft", cleft_dir)
    print(f"llm_size_gb={llm_bytes / 1e9:.3f}")
    print(f"adapter_checkpoint_gb={adapter_bytes / 1e9:.3f}")
    print(f"llm_load_rss_growth_gb={llm_growth:.3f}")
    print(f"adapter_load_rss_growth_gb={adapter_growth:.3f}")
    print(f"adapter_load_vs_llm_size={adapter_growth * 1e9 / llm_bytes:.2f}")
    print(f"adapter_load_vs_llm_load={adapter_growth / llm_growth:.2f}")


if __name__ == "__main__":
    main()
