"""Stage 2 and evaluation on 2 processes (DDP and FSDP2, gloo) equal 1 process on the concatenated batch.

Stage 2 used to stop at its second step on several processes: with the InfoNCE loss `logit_bias` was trainable but
never used, and DDP waits for every trainable parameter's gradient. The matrix (each run 3 steps, tiny towers):
CXR multi-label (InfoNCE, frozen vision tower with cached features: the demo's recipe) and EMBED single-label (BCE,
vision tower trained: the paper's), each under DDP and FSDP2, plus the evaluation under DDP. Stage 1 under DDP and
FSDP2 is tests/test_training_ddp.py / test_training_fsdp.py; two machines: tests/test_training_two_machines.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import subprocess

from conftest import DEMO_CONFIG
import pytest
from safetensors.torch import load_file
from stage_worker import launch_command, launch_env, write_jobs
import torch

from cleft_hf.arguments import load_arguments
from cleft_hf.evaluation.arguments import EvaluateArguments
from cleft_hf.evaluation.runner import run_evaluation
from cleft_hf.training.config import PromptTuneArguments
from cleft_hf.training.prompt_tuning import run_prompt_tuning

PER_PROCESS_BATCH = 4


def stage2_arguments(model_dir: Path, data_root: Path, output: Path, **extra) -> PromptTuneArguments:
    return load_arguments(
        PromptTuneArguments,
        DEMO_CONFIG,
        {
            "data_root": str(data_root),
            "model_name_or_path": str(model_dir),
            "output_dir": str(output),
            "report_to": "none",
            "per_device_batch_size": PER_PROCESS_BATCH,
            "max_steps": 3,
            "warmup_steps": 1,
            "num_context_tokens": 3,
            "log_every": 1,
            "eval_every": 0,
            "save_every": 0,
            **extra,
        },
        section="prompt_tune",
    )


def stage2_cases(cxr_stage1, demo_tree, embed_stage1, embed_tree, output: Path) -> dict[str, PromptTuneArguments]:
    return {
        "cxr": stage2_arguments(cxr_stage1, demo_tree, output / "cxr", loss="clip", freeze_vision=True),
        "embed": stage2_arguments(
            embed_stage1,
            embed_tree,
            output / "embed",
            dataset="embed",
            loss="bce",
            dataset_kwargs={"task": "density"},
            freeze_vision=False,
            augment=False,
        ),
    }


def evaluate_arguments(model_dir: Path, demo_tree: Path, output: Path) -> EvaluateArguments:
    return load_arguments(
        EvaluateArguments,
        DEMO_CONFIG,
        {
            "data_root": str(demo_tree),
            "model_name_or_path": str(model_dir),
            "output_dir": str(output),
            "per_device_batch_size": PER_PROCESS_BATCH,
            "linear_probe_fractions": [1.0],
        },
        section="evaluate",
    )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, cxr_stage1, demo_tree, embed_stage1, embed_tree):
    """Each case on 1 process with the batch of both processes; the CXR model evaluated."""
    output = tmp_path_factory.mktemp("one-process")
    cases = stage2_cases(cxr_stage1, demo_tree, embed_stage1, embed_tree, output)
    for args in cases.values():
        run_prompt_tuning(dataclasses.replace(args, per_device_batch_size=2 * PER_PROCESS_BATCH))
    run_evaluation(evaluate_arguments(output / "cxr" / "model", demo_tree, output / "eval"))
    return output


def _launch(how: str, jobs: list, tmp_path: Path) -> list[list[str]]:
    """Run `jobs` on 2 processes with a fresh load cache; returns what each process wrote into that cache."""
    cache = tmp_path / "load-cache"
    write_jobs(tmp_path / "jobs.json", jobs, watched=[cache])
    done = subprocess.run(
        launch_command(how, tmp_path / "jobs.json", tmp_path),
        env=launch_env(CLEFT_HF_LOAD_CACHE=str(cache)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((tmp_path / f"writes-rank{rank}.json").read_text())["writes"] for rank in (0, 1)]


def _assert_same_run(run: Path, reference: Path) -> None:
    logs = [json.loads((folder / "model" / "training_log.json").read_text()) for folder in (run, reference)]
    curves = [next(value for key, value in log.items() if key.startswith("stage 2")) for log in logs]
    assert len(curves[0]) == 3
    torch.testing.assert_close(curves[0], curves[1], atol=1e-5, rtol=0)
    weights, expected = (load_file(folder / "model" / "model.safetensors") for folder in (run, reference))
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-5, rtol=0, msg=name)


def _metrics(folder: Path) -> dict:
    records = json.loads((folder / "results.json").read_text())["metrics"]
    return {(r["task"], r["metric"], json.dumps(r["setting"], sort_keys=True)): r["value"] for r in records}


@pytest.mark.parametrize("how", ["ddp", "fsdp"])
def test_stage2_on_two_processes_equals_one_process(
    how, tmp_path, one_process, cxr_stage1, demo_tree, embed_stage1, embed_tree
):
    cases = stage2_cases(cxr_stage1, demo_tree, embed_stage1, embed_tree, tmp_path)
    jobs = [("prompt_tune", args) for args in cases.values()]
    if how == "ddp":  # evaluation of the same model folder: embeddings gathered across the processes
        jobs.append(("evaluate", evaluate_arguments(one_process / "cxr" / "model", demo_tree, tmp_path / "eval")))
    cache_writes = _launch(how, jobs, tmp_path)
    assert cache_writes[0] and not cache_writes[1]  # the node's local rank 0 builds the tables, rank 1 reads them
    for name in cases:
        _assert_same_run(tmp_path / name, one_process / name)
    if how == "ddp":
        metrics, expected = _metrics(tmp_path / "eval"), _metrics(one_process / "eval")
        assert metrics.keys() == expected.keys() and len(metrics) > 5
        torch.testing.assert_close(metrics, expected, atol=1e-6, rtol=0)
