"""Worker for tests/test_training_fsdp.py: stage 1 through `run_pretraining` on 2 CPU processes (gloo), launched
by `accelerate launch` either as DDP (`--multi_gpu`) or with the shipped FSDP2 config
(`--config_file examples/configs/accelerate/fsdp.yaml`).

Why the state switch: accelerate 1.15 makes CPU processes `MULTI_CPU` (DDP) and silently ignores the FSDP plugin
(in `AcceleratorState.__init__` only GPU-like device types become `FSDP`). Under the FSDP config this worker sets
the distributed type to FSDP after the Accelerator is built, with the plugin read from the launcher's FSDP_*
variables (the shipped config), so that accelerate's own FSDP2 code runs unchanged: `fsdp2_prepare_model`
(`fully_shard` per `_no_split_modules` unit), FSDP2 clipping, `save_state` (sharded) and `get_state_dict`.

Writes OUT/launch.json (rank 0): the distributed type and whether the prepared parameters were sharded DTensors.
`fsdp_train_worker.py ARGS.json OUT [ARGS2.json OUT2 ...]` runs several trainings one after the other in the same
processes (one launch, one start-up: e.g. a run, then a resume from its checkpoint). As in `stage_worker`, the
process group stays up between runs: closing and re-opening it under the launcher's store can hang in gloo.
"""

from __future__ import annotations

import json
import os
import sys

from accelerate import FullyShardedDataParallelPlugin, PartialState
from accelerate.utils import DistributedType

from cleft_hf.training import runner
from cleft_hf.training.contrastive_pretraining import run_pretraining

seen: dict = {}
runner_make_accelerator, runner_prepare_run = runner.make_accelerator, runner.prepare_run


def make_accelerator_allowing_cpu_fsdp(args):
    accelerator = runner_make_accelerator(args)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true" and accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        PartialState().distributed_type = DistributedType.FSDP  # AcceleratorState() re-reads PartialState's
        accelerator.state.distributed_type = DistributedType.FSDP
    seen["distributed_type"] = str(accelerator.distributed_type)
    return accelerator


def prepare_run_recording(accelerator, args, model, loader, project):
    from torch.distributed.tensor import DTensor

    prepared = runner_prepare_run(accelerator, args, model, loader, project)
    seen["sharded"] = all(isinstance(p, DTensor) for p in prepared[0].parameters())
    return prepared


if __name__ == "__main__":
    from cleft_hf.training.config import PretrainArguments

    runner.make_accelerator, runner.prepare_run = make_accelerator_allowing_cpu_fsdp, prepare_run_recording
    destroy_process_group = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None  # `end_training` of a run: keep it
    for arguments_file, out_dir in zip(sys.argv[1::2], sys.argv[2::2]):
        seen.clear()
        run_pretraining(PretrainArguments(**json.loads(open(arguments_file).read())))
        if PartialState().is_main_process:
            with open(os.path.join(out_dir, "launch.json"), "w") as handle:
                json.dump(seen, handle)
    destroy_process_group(PartialState())
