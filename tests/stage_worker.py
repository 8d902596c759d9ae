"""Worker of the multi-process stage tests: runs a list of jobs (stage 1, stage 2, evaluation, each through the
function its entry script calls) in every process of one `accelerate launch`, single-node or one "machine" of a
multi-node launch.

`accelerate launch [--multi_gpu | --config_file fsdp.yaml] ... tests/stage_worker.py JOBS.json RECORD_DIR`
JOBS.json: `{"jobs": [{"stage": "pretrain" | "prompt_tune" | "evaluate", "args": {...}}, ...], "watched": [...]}`.
Under the FSDP config the accelerator is switched to FSDP as in `fsdp_train_worker` (accelerate ignores FSDP on
CPU). With `watched` folders, `write_audit` records what each process writes there (RECORD_DIR/writes-rank<r>.json).
"""

from __future__ import annotations

import json
import sys

import write_audit

if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    if spec.get("watched"):
        write_audit.start(sys.argv[2], spec["watched"])

    from accelerate import PartialState
    from fsdp_train_worker import make_accelerator_allowing_cpu_fsdp

    from cleft_hf.evaluation.arguments import EvaluateArguments
    from cleft_hf.evaluation.runner import run_evaluation
    from cleft_hf.training import runner
    from cleft_hf.training.config import PretrainArguments, PromptTuneArguments
    from cleft_hf.training.contrastive_pretraining import run_pretraining
    from cleft_hf.training.prompt_tuning import run_prompt_tuning

    runner.make_accelerator = make_accelerator_allowing_cpu_fsdp
    entries = {
        "pretrain": (PretrainArguments, run_pretraining),
        "prompt_tune": (PromptTuneArguments, run_prompt_tuning),
        "evaluate": (EvaluateArguments, run_evaluation),
    }
    destroy_process_group = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None  # `end_training` of a job: keep it
    for job in spec["jobs"]:
        arguments_class, run = entries[job["stage"]]
        run(arguments_class(**job["args"]))
    destroy_process_group(PartialState())


def free_port() -> int:
    """A TCP port free on loopback now (several test sessions launch distributed runs on one machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(how: str, jobs_file, record_dir, *, machine_rank: int = 0, port: int = 0) -> list[str]:
    """The `accelerate launch` command of this worker: `how` is "ddp" / "fsdp" (2 processes, one node) or
    "machines" (machine `machine_rank` of 2 one-process machines meeting at 127.0.0.1:`port`)."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    if how == "machines":
        topology = [
            "--multi_gpu",
            "--num_machines",
            "2",
            "--machine_rank",
            str(machine_rank),
            "--main_process_ip",
            "127.0.0.1",
        ]
    elif how == "fsdp":
        topology = ["--config_file", str(here.parent / "examples/configs/accelerate/fsdp.yaml"), "--num_machines", "1"]
    else:
        topology = ["--multi_gpu", "--num_machines", "1"]
    return [
        sys.executable,
        *launch_arguments(
            *topology,
            "--num_processes",
            "2",
            str(here / "stage_worker.py"),
            str(jobs_file),
            str(record_dir),
            port=port,
        ),
    ]


def launch_arguments(*arguments: str, port: int = 0) -> list[str]:
    """`-m accelerate.commands.launch` with this suite's CPU settings (no mixed precision, no dynamo, main process
    port `port`, 0: a free one), then `arguments` (topology, processes, the script and its arguments); the
    interpreter goes before it."""
    return [
        "-m",
        "accelerate.commands.launch",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *arguments,
    ]


def launch_env(**extra: str) -> dict[str, str]:
    """Environment of a launched test run: offline, one thread per process, loopback gloo, repo + tests importable."""
    import os
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def write_jobs(path, jobs: list[tuple[str, object]], watched=()) -> None:
    """JOBS.json of `(stage, arguments dataclass)` pairs."""
    import dataclasses

    entries = [{"stage": stage, "args": dataclasses.asdict(args)} for stage, args in jobs]
    with open(path, "w") as handle:
        json.dump({"jobs": entries, "watched": [str(folder) for folder in watched]}, handle)
