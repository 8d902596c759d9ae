"""benchmarks/gpu_check.py --tiny: every part's code path on CPU (GPU-only parts skip), each part independent."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _run(*arguments: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_tiny_gpu_check_runs_every_part(tmp_path):
    values = _run("--tiny", "--out", str(tmp_path))
    for part in ("paper_scale", "pretrain", "stage2"):
        assert values[part] == "ok", values
    for part in ("fsdp", "deepspeed", "flash_attn"):
        assert values[part] == ("skipped: no CUDA" if not torch.cuda.is_available() else "ok"), values
    assert float(values["paper_scale_lora_mfu_pct"]) > 0 and float(values["paper_scale_lora_images_per_s"]) > 0
    for stage in ("pretrain", "stage2"):  # examples/*.py themselves, timed through the real loader
        assert float(values[f"{stage}_images_per_s"]) > 0
        assert 0 <= float(values[f"{stage}_data_wait_fraction"]) < 1
    assert (tmp_path / "stage2" / "model" / "model.safetensors").is_file()


def test_a_failing_part_prints_its_reason_and_the_others_go_on(tmp_path):
    values = _run("--tiny", "--out", str(tmp_path), "--parts", "stage2", "fsdp")
    assert values["stage2"] == "failed: needs the model of the pretrain part, which did not finish"
    assert "fsdp" in values and "total_s" in values
