"""Two 1-process "machines" on this host (`accelerate launch --num_machines 2 --machine_rank 0|1`, each started
on its own, as a cluster starts one launcher per node) sharing one output folder, each with its own load cache.

One launch per machine runs: stage 1 (4 steps, checkpoints at steps 2 and 4, validation with a best model), the
same run resumed from the step-2 checkpoint it wrote, and stage 2 on its model. The runs equal 1 process on the
concatenated batch (1e-5), the resumed run ends on exactly the same weights, and the write audit shows who writes
what: global rank 0 alone holds the run locks and writes arguments, final and best models; node 1 writes only into
the checkpoints' staging folders (its random states) and its own node's load cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import re
import signal
import subprocess

from conftest import DEMO_CONFIG, tiny_run_overrides
from safetensors.torch import load_file
from stage_worker import free_port, launch_command, launch_env, write_jobs
from test_training_multiprocess import PER_PROCESS_BATCH, stage2_arguments
import torch

from cleft_hf.arguments import load_arguments
from cleft_hf.training.config import PretrainArguments
from cleft_hf.training.contrastive_pretraining import run_pretraining
from cleft_hf.training.prompt_tuning import run_prompt_tuning

EXACT = {"augment": False, "label_caption_prob": 0.0}  # per-process data-loading randomness is not a shared stream


def _launch_two_machines(tmp_path: Path, caches: list[Path], timeout: float = 300) -> None:
    port = free_port()
    machines = []
    for rank, cache in enumerate(caches):
        log = open(tmp_path / f"machine{rank}.log", "w")
        command = launch_command("machines", tmp_path / "jobs.json", tmp_path, machine_rank=rank, port=port)
        machines.append(
            (
                subprocess.Popen(
                    command,
                    env=launch_env(CLEFT_HF_LOAD_CACHE=str(cache)),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        )
    try:
        codes = [process.wait(timeout=timeout) for process, _ in machines]
    finally:
        for process, log in machines:
            if process.poll() is None:  # over time: stop this launcher's own process group
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
    logs = [(tmp_path / f"machine{rank}.log").read_text()[-3000:] for rank in range(2)]
    assert codes == [0, 0], "\n".join(logs)


def _writes(tmp_path: Path, rank: int) -> dict:
    record = json.loads((tmp_path / f"writes-rank{rank}.json").read_text())
    return {**record, "events": record["writes"], "writes": [path for _, path in record["writes"]]}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_two_machines_train_resume_and_write_only_what_is_theirs(tmp_path, demo_tree, demo_llm):
    shared, caches = tmp_path / "shared", [tmp_path / "node0-cache", tmp_path / "node1-cache"]
    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, shared / "stage1"),
        **EXACT,
        "max_steps": 4,
        "save_every": 2,
        "keep_last": 0,
        "eval_every": 2,
        "per_device_batch_size": PER_PROCESS_BATCH,
    }
    overrides["model_config"]["peft_config"] = {"peft_type": "LORA", "lora_dropout": 0.0}
    stage1 = load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain")
    resumed = dataclasses.replace(
        stage1,
        output_dir=str(shared / "resumed"),
        resume_from_checkpoint=str(shared / "stage1" / "checkpoints" / "step_2"),
    )
    stage2 = stage2_arguments(
        shared / "stage1" / "model", demo_tree, shared / "stage2", loss="clip", freeze_vision=True
    )
    write_jobs(
        tmp_path / "jobs.json",
        [("pretrain", stage1), ("pretrain", resumed), ("prompt_tune", stage2)],
        watched=[shared, *caches],
    )
    _launch_two_machines(tmp_path, caches)

    # the same runs on 1 process with the batch of both machines
    single = tmp_path / "single"
    run_pretraining(dataclasses.replace(stage1, output_dir=str(single / "stage1"), per_device_batch_size=8))
    run_prompt_tuning(dataclasses.replace(stage2, output_dir=str(single / "stage2"), per_device_batch_size=8))
    for run in ("stage1", "stage2"):
        weights, expected = _weights(shared / run / "model"), _weights(single / run / "model")
        assert weights.keys() == expected.keys()
        for name, tensor in expected.items():
            torch.testing.assert_close(weights[name], tensor, atol=1e-5, rtol=0, msg=f"{run}: {name}")
    final, resumed_final = _weights(shared / "stage1" / "model"), _weights(shared / "resumed" / "model")
    for name, tensor in final.items():
        torch.testing.assert_close(resumed_final[name], tensor, atol=0, rtol=0, msg=name)
    assert (shared / "stage1" / "best_model" / "model.safetensors").is_file()

    node0, node1 = _writes(tmp_path, 0), _writes(tmp_path, 1)
    assert (node0["node"], node0["local_rank"], node1["node"], node1["local_rank"]) == (0, 0, 1, 0)
    for run in ("stage1", "resumed", "stage2"):  # rank 0: lock, arguments, final model of every run
        assert f"shared/{run}/.cleft-run.lock" in node0["writes"]
        assert any(path.startswith(f"shared/{run}/model") for path in node0["writes"])
    assert any(path.startswith("shared/stage1/best_model") for path in node0["writes"])
    # node 1 only opens the staging folder of each checkpoint, where accelerate's save_state puts every process's
    # random states (torch writes that file natively, unseen here); rank 0 publishes (renames) and rotates
    in_shared = [(kind, path) for kind, path in node1["events"] if path.startswith("shared/")]
    assert in_shared and all(
        kind == "mkdir" and re.fullmatch(r"shared/\w+/checkpoints/\.step_\d+\.partial-.+", path)
        for kind, path in in_shared
    ), in_shared
    for rank, record in enumerate((node0, node1)):  # each node's local rank 0 fills its own node's load cache
        assert any(path.startswith(f"node{rank}-cache/") for path in record["writes"])
        assert not any(path.startswith(f"node{1 - rank}-cache/") for path in record["writes"])
