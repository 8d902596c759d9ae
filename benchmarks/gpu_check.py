"""One prepared check for a first CUDA GPU: every part time-boxed, independent, printing `name=value` lines.

    python benchmarks/gpu_check.py            # on one CUDA GPU, from the repository root of a fresh clone (< 8 min)
    python benchmarks/gpu_check.py --tiny     # every part's code path with tiny models on CPU (GPU-only parts skip)

Without `--tiny` the script first installs this package (`pip install -c constraints.txt -e .`) when it is not
importable, then runs, each part in its own process under its own time limit (a failed part prints
`<part>=failed: <reason>` and the next one starts):

- `paper_scale`: `benchmarks/gpu_paper_scale.py` (LoRA bf16 vs a fully trained LLM: images/s, peak memory, MFU
  against the measured bf16 matmul rate);
- `pretrain`: `examples/pretrain.py` itself for 30 steps at the paper configuration (ViT-B/14-reg and a
  BioMedLM-size GPT-2 built from configs, bf16, gradient checkpointing, batch 72) on 2500 x 3000 JPEGs written
  first, through the real loader with workers: images/s, the fraction of time spent waiting for data, peak memory;
- `stage2`: `examples/prompt_tune.py` for 30 steps on that model (vision tower trained, the paper's setting);
- `fsdp` (GPU): FSDP2 through the shipped config on one GPU: start, save, resume, reload;
- `deepspeed` (GPU): `pip install deepspeed`, then ZeRO-2 and ZeRO-3 through the shipped configs likewise;
- `flash_attn` (GPU): flash-attn when a wheel installs: its LLM output against sdpa's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
BOXES = {"paper_scale": 100, "pretrain": 170, "stage2": 70, "fsdp": 40, "deepspeed": 70, "flash_attn": 30}  # 480 s
GPU_ONLY = ("fsdp", "deepspeed", "flash_attn")
PAPER = {"steps": 30, "batch": 72, "images": 1000, "workers": 8, "text_length": 256}  # ~450 training images
TINY = {"steps": 3, "batch": 4, "images": 24, "workers": 1, "text_length": 48}


# ----------------------------------------------------------------------------------------------- parent process
def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def cuda_available() -> bool:
    probe = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() == "True"


def ensure_installed() -> None:
    """Install this package (and its pinned torch) from the package registry when it is not importable."""
    check = subprocess.run(
        [sys.executable, "-c", "import cleft_hf, accelerate, timm"], capture_output=True, check=False
    )
    if check.returncode == 0:
        print("install=present")
        return
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-c", "constraints.txt", "-e", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"install={'ok' if done.returncode == 0 else 'failed: ' + _one_line(done.stderr)}")
    print(f"install_s={time.perf_counter() - began:.1f}")


def run_part(name: str, args: argparse.Namespace, gpu: bool) -> None:
    if not gpu and (name in GPU_ONLY or not args.tiny):
        print(f"{name}=skipped: no CUDA")
        return
    if name == "paper_scale":  # its own script (it runs each variant in a fresh process)
        tiny = [
            "--tiny",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--batch_size",
            "2",
            "--text_length",
            "16",
        ]
        command = [sys.executable, str(ROOT / "benchmarks" / "gpu_paper_scale.py"), *(tiny if args.tiny else [])]
    else:
        tiny = ["--tiny"] if args.tiny else []
        command = [sys.executable, __file__, "--part", name, "--out", str(args.out), *tiny]
    prefix = "paper_scale_" if name == "paper_scale" else ""
    box = BOXES[name] * (4 if args.tiny else 1)  # --tiny: a shared CPU, not the GPU the boxes are sized for
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=box, check=False)
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        print("".join(prefix + line + "\n" for line in output.splitlines() if "=" in line), end="")
        print(f"{name}=failed: over its {box} s box")
        return
    print(
        "".join(
            prefix + line + "\n" for line in done.stdout.splitlines() if "=" in line and " " not in line.split("=")[0]
        ),
        end="",
    )
    status = "ok" if done.returncode == 0 else f"failed: {_one_line(done.stderr or done.stdout)}"
    print(f"{name}={status}")
    print(f"{name}_s={time.perf_counter() - began:.1f}")


# ----------------------------------------------------------------------------------------------- child parts
def _print(prefix: str, values: dict) -> None:
    for key, value in values.items():
        print(f"{prefix}_{key}={value:.4g}" if isinstance(value, float) else f"{prefix}_{key}={value}", flush=True)


def _write_inputs(args: argparse.Namespace, sizes: dict) -> Path:
    """The JPEG tree (full-size on GPU), a random LLM saved like a Hub one (BioMedLM's shape on GPU) and the config."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config
    import yaml

    from cleft_hf.demo.language_model.tokenizer_training import train_tokenizer
    from cleft_hf.demo.synthetic import write_demo_mimic_cxr

    work = Path(args.out)
    config_file = work / "gpu_check.yaml"
    if config_file.is_file():
        return config_file
    began = time.perf_counter()
    if args.tiny:
        write_demo_mimic_cxr(work / "data", sizes["images"], image_size=64, seed=0, n_test_per_class=1)
    else:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_data import make_jpeg_tree

        make_jpeg_tree(work / "data", sizes["images"], workers=os.cpu_count() or 1)
    texts = [path.read_text() for path in sorted((work / "data").rglob("s*.txt"))[:500]]
    tokenizer = train_tokenizer(texts, family="gpt2", vocab_size=500 if args.tiny else 4000)
    shape = {"n_layer": 2, "n_embd": 64, "n_head": 4} if args.tiny else {"n_layer": 32, "n_embd": 2560, "n_head": 20}
    llm_config = GPT2Config(
        **shape,
        vocab_size=len(tokenizer) if args.tiny else 28896,
        n_positions=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = torch.float32 if args.tiny else torch.bfloat16
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init of 2.7 B weights: on the GPU
        AutoModelForCausalLM.from_config(llm_config, dtype=dtype).save_pretrained(work / "llm")
    tokenizer.save_pretrained(work / "llm")
    print(f"inputs_s={time.perf_counter() - began:.1f}", flush=True)
    vision = (
        {
            "vision_model_name": "vit_small_patch16_224",
            "image_size": 32,
            "projection_dim": 32,
            "vision_model_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "reg_tokens": 4},
        }
        if args.tiny
        else {"vision_model_name": "vit_base_patch14_reg4_dinov2", "image_size": 224}
    )
    common = {
        "dataset": "synthetic",
        "data_root": str(work / "data"),
        "per_device_batch_size": sizes["batch"],
        "dataloader_num_workers": sizes["workers"],
        "max_steps": sizes["steps"],
        "warmup_steps": 1,
        "save_every": 0,
        "eval_every": 0,
        "log_every": 1,
        "report_to": "none",
        "dtype": "float32" if args.tiny else "bfloat16",
    }
    config = {
        "common": common,
        "pretrain": {
            "output_dir": str(work / "stage1"),
            "vision_pretrained": False,
            "model_config": {**vision, "text_model_name_or_path": str(work / "llm")},
            "gradient_checkpointing": True,
            "max_text_length": sizes["text_length"],
        },
        "prompt_tune": {
            "output_dir": str(work / "stage2"),
            "model_name_or_path": str(work / "stage1" / "model"),
            "freeze_vision": False,
            "num_context_tokens": 30,
        },
    }
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    return config_file


def _run_script_probed(script: str, argv: list[str], prefix: str, warm_batches: int) -> None:
    """Run an examples/ script in this process with the data-loader iterator timed: images/s and the fraction of
    time spent waiting for the next batch, over the batches after the first `warm_batches`; peak memory."""
    import runpy

    from accelerate.data_loader import DataLoaderShard
    import torch

    marks: list[tuple[float, float, int]] = []  # (time the batch arrived, seconds waited for it, images)
    original = DataLoaderShard.__iter__

    def timed(self):
        iterator = original(self)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            now = time.perf_counter()
            marks.append((now, now - asked, int(batch["pixel_values"].shape[0]) if "pixel_values" in batch else 0))
            yield batch

    DataLoaderShard.__iter__ = timed
    sys.argv = [script, *argv]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    window = marks[warm_batches:]
    if len(window) < 2:
        raise SystemExit(f"{script}: only {len(marks)} batches were loaded, too few to time")
    elapsed = window[-1][0] - window[0][0]
    values = {
        "batches_timed": len(window) - 1,
        "images_per_s": sum(images for _, _, images in window[1:]) / elapsed,
        "data_wait_fraction": sum(wait for _, wait, _ in window[1:]) / elapsed,
    }
    if torch.cuda.is_available():
        values["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        values["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    _print(prefix, values)


def part_training(args: argparse.Namespace, stage: str) -> None:
    sizes = TINY if args.tiny else PAPER
    if not args.tiny:
        os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "bf16")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if stage == "stage2" and not (Path(args.out) / "stage1" / "model").is_dir():
        raise SystemExit("needs the model of the pretrain part, which did not finish")
    config = _write_inputs(args, sizes)
    script = "examples/pretrain.py" if stage == "pretrain" else "examples/prompt_tune.py"
    _run_script_probed(script, ["--config", str(config)], stage, warm_batches=1 if args.tiny else 3)


def _launch_and_reload(args: argparse.Namespace, prefix: str, accelerate_config: str) -> None:
    """Stage 1 (tiny towers, 4 steps, saves at 2 and 4) through `accelerate launch --config_file`, resumed from
    step 2 into another folder: both final models must load and be equal."""
    from safetensors.torch import load_file

    from cleft_hf import CLEFTModel

    tiny = argparse.Namespace(**{**vars(args), "tiny": True, "out": str(Path(args.out) / "tiny")})
    config = _write_inputs(tiny, TINY)
    runs, first_run = {}, Path(args.out) / f"{prefix}_run"
    for run, extra in (("run", []), ("resumed", ["--resume_from_checkpoint", str(first_run / "checkpoints/step_2")])):
        output = Path(args.out) / f"{prefix}_{run}"
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            accelerate_config,
            "--num_processes",
            "1",
            "examples/pretrain.py",
            "--config",
            str(config),
            "--output_dir",
            str(output),
            "--max_steps",
            "4",
            "--save_every",
            "2",
            "--keep_last",
            "0",
            "--augment",
            "false",
            "--dataloader_num_workers",
            "0",
            *extra,
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{run}: {_one_line(done.stderr)}")
        runs[run] = output / "model"
    CLEFTModel.from_pretrained(runs["run"])
    first, second = (load_file(runs[run] / "model.safetensors") for run in ("run", "resumed"))
    diff = max(float((first[key].float() - second[key].float()).abs().max()) for key in first)
    _print(prefix, {"start_save_resume_reload": "ok", "resume_max_abs_diff": diff})


def part_fsdp(args: argparse.Namespace) -> None:
    _launch_and_reload(args, "fsdp", str(ROOT / "examples/configs/accelerate/fsdp.yaml"))


def _pip_install(*requirement: str, timeout: float) -> None:
    """`pip install` within `timeout` seconds, else one line saying why not."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *requirement],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"pip install {' '.join(requirement)} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        raise SystemExit(f"pip install {' '.join(requirement)} failed: {_one_line(done.stderr)}")


def part_deepspeed(args: argparse.Namespace) -> None:
    _pip_install("deepspeed", timeout=45)
    for stage in ("zero2", "zero3"):
        config = ROOT / f"examples/configs/accelerate/deepspeed_{stage}.yaml"
        _launch_and_reload(args, f"deepspeed_{stage}", str(config))


def part_flash_attn(args: argparse.Namespace) -> None:
    _pip_install("--only-binary=:all:", "flash-attn", timeout=20)
    import torch
    from transformers import AutoModel, GPT2Config

    config = GPT2Config(n_layer=2, n_embd=256, n_head=4, vocab_size=1000)
    ids = torch.randint(0, 1000, (4, 128), device="cuda")
    outputs = []
    for attention in ("sdpa", "flash_attention_2"):
        torch.manual_seed(0)
        model = AutoModel.from_config(config, dtype=torch.bfloat16, attn_implementation=attention).cuda().eval()
        with torch.no_grad():
            outputs.append(model(input_ids=ids).last_hidden_state.float())
    _print("flash_attn", {"max_abs_diff_vs_sdpa": float((outputs[0] - outputs[1]).abs().max())})


PARTS = {
    "paper_scale": None,
    "pretrain": lambda a: part_training(a, "pretrain"),
    "stage2": lambda a: part_training(a, "stage2"),
    "fsdp": part_fsdp,
    "deepspeed": part_deepspeed,
    "flash_attn": part_flash_attn,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU: every part's code path")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"), help="work folder (data, runs)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # child process: one part
    args = parser.parse_args()
    if args.part:
        PARTS[args.part](args)
        return
    began = time.perf_counter()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.tiny:
        ensure_installed()
    gpu = cuda_available()
    print(f"cuda={gpu}")
    if gpu:
        probe = "import torch; p = torch.cuda.get_device_properties(0); print(json.dumps([p.name, p.total_memory]))"
        done = subprocess.run(
            [sys.executable, "-c", "import json; " + probe], capture_output=True, text=True, check=False
        )
        name, memory = json.loads(done.stdout)
        print(f"gpu_name={name.replace(' ', '_')}")
        print(f"gpu_memory_gb={memory / 2**30:.1f}")
    elif not args.tiny:
        print("note=no CUDA GPU: the parts run on CPU at full size only with --tiny")
    for name in args.parts:
        run_part(name, args, gpu)
    print(f"total_s={time.perf_counter() - began:.1f}")


if __name__ == "__main__":
    main()
