"""examples/slurm/pretrain.sbatch executed here with fake `srun` / `scontrol` (tests/slurm_shim): two one-process
"machines" of this host, one launcher per node from $SLURM_NODEID / $SLURM_JOB_NODELIST / $SLURM_GPUS_ON_NODE.
The job is pre-empted (SIGTERM to srun's tasks after the first checkpoint): it saves, exits 143 and requeues
itself; the requeued job (started again, here with LAUNCHER=torchrun, the script's other form) resumes from the
newest checkpoint and finishes the run."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from conftest import DEMO_CONFIG, tiny_run_overrides
from stage_worker import free_port, launch_env
import yaml

from cleft_hf.arguments import load_arguments
from cleft_hf.training.config import PretrainArguments

HERE = Path(__file__).resolve().parent
SBATCH = HERE.parent / "examples" / "slurm" / "pretrain.sbatch"
MAX_STEPS = 60  # about 2 s at ~30 steps/s here: time for the pre-emption to land before the end


def _job(tmp_path: Path, env: dict, **extra: str) -> subprocess.Popen:
    log = open(tmp_path / f"job-{len(list(tmp_path.glob('job-*.log')))}.log", "w")
    return subprocess.Popen(
        ["bash", str(SBATCH)],
        cwd=SBATCH.parent.parent.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**env, "MAIN_PORT": str(free_port()), **extra},
    )


def _stop(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def test_sbatch_runs_two_nodes_requeues_on_preemption_and_resumes(tmp_path, demo_tree, demo_llm):
    output = tmp_path / "run"
    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, output),
        "augment": False,
        "label_caption_prob": 0.0,
        "per_device_batch_size": 4,
        "max_steps": MAX_STEPS,
        "save_every": 4,
        "keep_last": 1,
    }
    fields = dataclasses.asdict(load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"pretrain": {k: v for k, v in fields.items() if v is not None}}))
    env = launch_env(
        PATH=os.pathsep.join([str(HERE / "slurm_shim"), str(Path(sys.executable).parent), os.environ["PATH"]]),
        SLURM_NNODES="2",
        SLURM_JOB_NODELIST="127.0.0.1,127.0.0.1",
        SLURM_GPUS_ON_NODE="1",
        SLURM_JOB_ID="4242",
        CONFIG=str(config),
        DATA_ROOT=str(demo_tree),
        OUTPUT_DIR=str(output),
        MIXED_PRECISION="no",
        FAKE_SLURM_LOG=str(tmp_path / "slurm.log"),
        FAKE_SLURM_SRUN_PID=str(tmp_path / "srun.pid"),
    )
    first = _job(tmp_path, env)
    try:
        deadline = time.monotonic() + 180
        while not any((output / "checkpoints").glob("step_*")):  # a first checkpoint (keep_last=1 may delete step_4)
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "job-0.log").read_text()[-3000:]
            time.sleep(0.02)
        os.kill(int((tmp_path / "srun.pid").read_text()), signal.SIGTERM)  # what SLURM does on pre-emption
        assert first.wait(timeout=120) == 143, (tmp_path / "job-0.log").read_text()[-3000:]
    finally:
        _stop(first)
    assert (tmp_path / "slurm.log").read_text() == "requeue 4242\n"
    assert not (output / "model").exists()
    saved = max(int(path.name.split("_")[1]) for path in (output / "checkpoints").glob("step_*"))
    assert 4 <= saved < MAX_STEPS

    second = _job(tmp_path, env, LAUNCHER="torchrun")
    try:
        assert second.wait(timeout=240) == 0, (tmp_path / "job-1.log").read_text()[-3000:]
    finally:
        _stop(second)
    assert f"resumed from {output / 'checkpoints' / f'step_{saved}'}" in (tmp_path / "job-1.log").read_text()
    log = json.loads((output / "model" / "training_log.json").read_text())
    assert [step for step, _ in log["stage 1 (contrastive)"]] == list(range(1, MAX_STEPS + 1))
    assert (tmp_path / "slurm.log").read_text() == "requeue 4242\n"  # finished: not requeued again
