"""2-process CPU FSDP2 (gloo) with the shipped accelerate config: the same losses and final weights as the
2-process DDP run, a sharded `save_state` that resumes exactly, and a final folder `from_pretrained` loads."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import subprocess
import sys

from conftest import tiny_run_overrides
from safetensors.torch import load_file
from stage_worker import launch_arguments
import torch

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.arguments import load_arguments
from cleft_hf.training.config import PretrainArguments

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEMO_CONFIG = ROOT / "cleft_hf" / "demo" / "demo.yaml"
FSDP_CONFIG = ROOT / "examples" / "configs" / "accelerate" / "fsdp.yaml"


def _launch(mode: str, args: PretrainArguments, out: Path, *then: tuple[PretrainArguments, Path]) -> dict:
    """One `accelerate launch` of the worker training `args` into `out`, then each `(args, out)` of `then` in the
    same processes; the launch record of the first run."""
    runs = [(args, out), *then]
    for run_args, run_out in runs:
        run_out.mkdir(parents=True, exist_ok=True)
        (run_out / "args.json").write_text(json.dumps(dataclasses.asdict(run_args)))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    how = ["--config_file", str(FSDP_CONFIG)] if mode == "fsdp" else ["--multi_gpu"]
    command = [
        sys.executable,
        *launch_arguments(
            *how,
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            str(HERE / "fsdp_train_worker.py"),
            *[str(p) for _, o in runs for p in (o / "args.json", o)],
        ),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "launch.json").read_text())


def _losses(run_dir: Path) -> list[float]:
    log = json.loads((run_dir / "model" / "training_log.json").read_text())
    return [loss for _, loss in next(iter(log.values()))]


def test_fsdp2_equals_ddp_saves_resumes_and_loads(tmp_path, demo_tree, demo_llm):
    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, tmp_path),
        "augment": False,
        "per_device_batch_size": 4,
        "max_steps": 4,
        "save_every": 2,
        "keep_last": 0,
    }
    overrides["model_config"]["peft_config"] = {"peft_type": "LORA", "lora_dropout": 0.0}
    args = load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain")
    ddp = _launch("ddp", dataclasses.replace(args, output_dir=str(tmp_path / "ddp")), tmp_path / "ddp")
    # the FSDP run, then (same processes) a resume from its step-2 sharded checkpoint
    step2 = tmp_path / "fsdp" / "checkpoints" / "step_2"
    resumed = dataclasses.replace(args, output_dir=str(tmp_path / "resumed"), resume_from_checkpoint=str(step2))
    fsdp = _launch(
        "fsdp",
        dataclasses.replace(args, output_dir=str(tmp_path / "fsdp")),
        tmp_path / "fsdp",
        (resumed, tmp_path / "resumed"),
    )
    assert ddp == {"distributed_type": "DistributedType.MULTI_CPU", "sharded": False}
    assert fsdp == {"distributed_type": "DistributedType.FSDP", "sharded": True}
    saved_files = {path.name for path in (tmp_path / "fsdp" / "model").iterdir()}
    assert "modeling_cleft.py" in saved_files and not any(name.startswith("_fsdp") for name in saved_files)

    torch.testing.assert_close(_losses(tmp_path / "fsdp"), _losses(tmp_path / "ddp"), atol=1e-5, rtol=0)
    ddp_weights, fsdp_weights = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("ddp", "fsdp"))
    assert fsdp_weights.keys() == ddp_weights.keys()
    for name, weight in ddp_weights.items():
        torch.testing.assert_close(fsdp_weights[name], weight, atol=1e-5, rtol=0, msg=name)

    # save_state under FSDP wrote per-rank shards; resuming from step 2 ends on the same weights
    assert any(step2.glob("pytorch_model_fsdp_0/*.distcp"))
    assert json.loads((tmp_path / "resumed" / "launch.json").read_text()) == fsdp
    for name, weight in load_file(tmp_path / "resumed" / "model" / "model.safetensors").items():
        torch.testing.assert_close(weight, fsdp_weights[name], atol=1e-5, rtol=0, msg=name)

    loaded, reference = (CLEFTModel.from_pretrained(tmp_path / run / "model").eval() for run in ("fsdp", "ddp"))
    processor = CLEFTProcessor.from_pretrained(tmp_path / "fsdp" / "model")
    batch = processor(text=["no acute findings", "small left pleural effusion"], images=[torch.rand(40, 40)] * 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, reference(**batch).logits_per_image)


def test_shipped_fsdp_wrap_policy_resolves_for_each_llm_and_tower(make_model, family):
    """The shipped config's wrap units come from the model: every LLM decoder layer and every timm block."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    import yaml

    fsdp_config = yaml.safe_load(FSDP_CONFIG.read_text())["fsdp_config"]
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp_config  # taken from model._no_split_modules
    for tower in ({}, {"vision_model_name": "resnet10t", "vision_model_kwargs": {}}):
        model = make_model(**tower)
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=fsdp_config["fsdp_version"], auto_wrap_policy=fsdp_config["fsdp_auto_wrap_policy"].lower()
        )
        plugin.set_auto_wrap_policy(model)
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        wrapped = [module for module in model.modules() if policy(module)]
        layers = model.text_model.get_base_model().config.num_hidden_layers
        blocks = (
            len(model.vision_model.blocks)
            if tower == {}
            else sum(len(getattr(model.vision_model, f"layer{i}")) for i in range(1, 5))
        )
        assert len(wrapped) == layers + blocks
