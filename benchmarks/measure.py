"""Shared measuring helpers for the benchmarks: each variant runs in a fresh subprocess (clean peak RSS)."""

from __future__ import annotations

from collections.abc import Callable
import json
import resource
import statistics
import subprocess
import sys
import time


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step: Callable[[], None], warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of `step()` after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_variant(script: str, variant: str, *extra: str) -> dict:
    """Run `python script --variant NAME --child` and parse the JSON line it prints last."""
    result = subprocess.run(
        [sys.executable, script, "--variant", variant, "--child", *extra], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(variant_results: dict[str, dict], baseline: str) -> None:
    """Print a markdown table plus `<variant>_vs_<baseline>` speed-up and memory ratios."""
    print("| variant | step time (s) | peak RSS (MiB) | RSS growth during training (MiB) |")
    print("|---|---:|---:|---:|")
    for name, r in variant_results.items():
        print(f"| {name} | {r['step_s']:.4f} | {r['peak_rss_mb']:.0f} | {r['train_rss_growth_mb']:.0f} |")
    base = variant_results[baseline]
    for name, r in variant_results.items():
        if name != baseline:
            print(f"speedup_{name}_vs_{baseline}={base['step_s'] / r['step_s']:.3f}")
            print(f"peak_rss_ratio_{name}_vs_{baseline}={r['peak_rss_mb'] / base['peak_rss_mb']:.3f}")
            print(
                f"train_memory_ratio_{name}_vs_{baseline}="
                f"{r['train_rss_growth_mb'] / max(base['train_rss_growth_mb'], 1e-9):.3f}"
            )
