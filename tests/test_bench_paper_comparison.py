"""benchmarks/bench_paper_comparison.py's code path with tiny towers: both variants in their own processes."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_paper_comparison.py"


def test_tiny_comparison_prints_every_line():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    for variant in ("cleft", "bert"):
        for name in ("trainable_params_m", "optimizer_state_gb", "peak_rss_gb", "step_s"):
            assert float(values[f"{variant}_{name}"]) > 0, (variant, name)
    ratio = float(values["cleft_vs_bert_trainable_ratio"])
    assert 0 < ratio < 1  # LoRA + ViT against a whole BERT + ViT
    assert abs(float(values["cleft_vs_bert_optimizer_state_ratio"]) - ratio) < 0.01  # AdamW: 2 moments each
    assert float(values["cleft_vs_bert_step_time_ratio"]) > 0
