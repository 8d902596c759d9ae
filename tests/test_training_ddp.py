"""2-process CPU DDP (gloo) through `accelerate launch`: CLEFT's loss and gradients equal one process on the
concatenated batch (negatives gathered across ranks with gradient)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
import subprocess
import sys

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from conftest import tiny_run_overrides
from ddp_train_worker import first_step
import pytest
from stage_worker import launch_arguments
import torch

from cleft_hf.arguments import load_arguments
from cleft_hf.training.config import PretrainArguments

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE.parent / "cleft_hf" / "demo" / "demo.yaml"


NF4 = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}
NO_BNB = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


@pytest.mark.parametrize("text_quantization", [None, pytest.param(NF4, id="nf4", marks=NO_BNB)])
def test_two_process_training_step_equals_single_process(tmp_path, demo_tree, demo_llm, text_quantization):
    overrides = tiny_run_overrides(demo_tree, demo_llm, tmp_path)
    overrides.update(augment=False, per_device_batch_size=4, gradient_checkpointing=False)
    overrides["model_config"]["peft_config"] = {"peft_type": "LORA", "lora_dropout": 0.0}
    overrides["model_config"]["text_quantization"] = text_quantization  # a 4-bit base LLM on each rank
    per_rank = load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain")
    (tmp_path / "args.json").write_text(json.dumps(dataclasses.asdict(per_rank)))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        *launch_arguments(
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            str(HERE / "ddp_train_worker.py"),
            str(tmp_path / "args.json"),
            str(tmp_path),
        ),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["texts"] != ranks[1]["texts"]

    whole = dataclasses.replace(per_rank, per_device_batch_size=8)
    reference = first_step(whole, Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True)))
    assert reference["texts"] == ranks[0]["texts"] + ranks[1]["texts"]  # the same 8 examples, split in two
    for rank in ranks:
        torch.testing.assert_close(rank["loss"], reference["loss"], atol=1e-5, rtol=0)
        assert rank["grads"].keys() == reference["grads"].keys()
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)
