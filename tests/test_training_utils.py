"""Tests of cleft_hf.training: optimiser groups, LR schedule, checkpointing (run arguments: test_cli.py)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from cleft_hf.training.checkpointing import CheckpointManager, list_checkpoints, resolve_resume_checkpoint
from cleft_hf.training.model_folder import save_pretrained_atomic
from cleft_hf.training.optim import build_optimizer, build_scheduler, parameter_groups, position_schedule
from cleft_hf.training.step_loop import NonFiniteLossError, stop_if_not_finite


# ------------------------------------------------------------------------------------------------ optimiser
class _VisionWithHook(nn.Module):
    """timm-like tower: a 3-D position embedding listed by `no_weight_decay()`."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 8))
        self.block = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def no_weight_decay(self):
        return {"pos_embed"}


class _PromptLearner(nn.Module):
    def __init__(self):
        super().__init__()
        self.ctx = nn.Parameter(torch.zeros(5, 8))


class _LlamaRMSNorm(nn.Module):  # recognised by its class name, like transformers' norms
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(8))


class _TinyCLEFT(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision = _VisionWithHook()
        self.text_embeddings = nn.Embedding(10, 8).requires_grad_(False)  # frozen LLM part
        self.text_layer = nn.Linear(8, 8).requires_grad_(False)
        self.lora_A = nn.Linear(8, 2, bias=False)
        self.text_norm = _LlamaRMSNorm()
        self.image_projection = nn.Linear(8, 4, bias=False)
        self.text_projection = nn.Linear(8, 4)
        self.tied_projection = self.image_projection  # shared parameter must appear once
        self.prompt_sets = nn.ModuleDict({"density": _PromptLearner()})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def test_parameter_groups_partition_trainable_parameters():
    model = _TinyCLEFT()
    groups = parameter_groups(model, weight_decay=0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    by_decay = {group["weight_decay"]: {names[id(p)] for p in group["params"]} for group in groups}
    assert by_decay[0.1] == {
        "vision.block.weight",
        "lora_A.weight",
        "image_projection.weight",
        "text_projection.weight",
    }
    assert by_decay[0.0] == {
        "vision.pos_embed", "vision.block.bias", "vision.norm.weight", "vision.norm.bias", "text_norm.weight",
        "text_projection.bias", "prompt_sets.density.ctx", "logit_scale",
    }  # fmt: skip
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) == len(trainable) and set(grouped) == trainable
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen and not frozen & set(grouped)


def test_build_optimizer_adamw_and_sgd():
    model = _TinyCLEFT()
    adamw = build_optimizer(model, "adamw", lr=4e-5, weight_decay=0.1, betas=(0.9, 0.98))
    assert isinstance(adamw, torch.optim.AdamW)
    assert sorted(g["weight_decay"] for g in adamw.param_groups) == [0.0, 0.1]
    assert adamw.param_groups[0]["betas"] == (0.9, 0.98) and adamw.param_groups[0]["lr"] == 4e-5
    sgd = build_optimizer(model, "SGD", lr=1e-4, weight_decay=1e-3, momentum=0.9)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(model, "lamb", lr=1e-3)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), lr=1e-3)


def _learning_rates(min_lr_ratio, warmup=10, total=50, kind="cosine"):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(optimizer, warmup, total, kind=kind, min_lr_ratio=min_lr_ratio)
    rates = []
    for _ in range(total + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_cosine_schedule_warms_up_then_decays_to_min(min_lr_ratio):
    rates = _learning_rates(min_lr_ratio)
    assert rates[0] == 0.0 and rates[5] == pytest.approx(1.0) and rates[10] == pytest.approx(2.0)
    for step in range(10, 51):
        progress = (step - 10) / 40
        expected = 2.0 * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert rates[step] == pytest.approx(expected, abs=1e-9)
    assert rates[50] == pytest.approx(2.0 * min_lr_ratio, abs=1e-9)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_scheduler_rejects_bad_lengths():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(optimizer, 20, 10)
    with pytest.raises(ValueError, match="schedule must be one of"):
        build_scheduler(optimizer, 1, 10, kind="step")
    assert _learning_rates(0.0, kind="linear")[30] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ checkpointing
def _batch(step):
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(4, 3, generator=generator), torch.randn(4, 2, generator=generator)


def _train(output_dir, steps, save_every=0, keep_last=2, resume=None, init_seed=0, allow_inexact=False):
    """Tiny deterministic run; batches depend only on the step. Returns (final weights, manager)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    optimizer = build_optimizer(model, "adamw", lr=1e-2, weight_decay=0.1)
    scheduler = build_scheduler(optimizer, 2, 8)
    model, optimizer = accelerator.prepare(model, optimizer)
    manager = CheckpointManager(accelerator, output_dir, save_every=save_every, keep_last=keep_last)
    start = manager.resume(resume, allow_inexact)["step"]
    position_schedule(optimizer, scheduler, 1e-2, start)  # the schedule is rebuilt, never unpickled
    for step in range(start + 1, steps + 1):
        inputs, targets = _batch(step)
        loss = nn.functional.mse_loss(model(inputs), targets)
        stop_if_not_finite(loss, step, manager)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if manager.should_save(step):
            manager.save(step, {"epoch": 0})
    return {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}, manager


def test_rotation_latest_and_resume_equals_uninterrupted(tmp_path):
    reference, _ = _train(tmp_path / "straight", steps=8)
    _, manager = _train(tmp_path / "run", steps=5, save_every=2, keep_last=2)  # "crash" after step 5
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [2, 4]
    latest = resolve_resume_checkpoint("latest", tmp_path / "run")
    assert latest.name == "step_4"
    resumed, _ = _train(tmp_path / "run", steps=8, save_every=2, keep_last=2, resume="latest", init_seed=123)
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [6, 8]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no staging or trash folder left


def test_resolve_resume_checkpoint_cases(tmp_path, caplog):
    assert resolve_resume_checkpoint(None, tmp_path) is None
    assert resolve_resume_checkpoint("latest", tmp_path) is None  # nothing saved yet: start fresh
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_resume_checkpoint(tmp_path / "nope", tmp_path)
    for step in (9, 10, 11):  # numeric, not lexical, order
        folder = tmp_path / "checkpoints" / f"step_{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')
        if step != 11:  # step_11: a folder whose deletion or save was cut short has no completeness marker
            (folder / "checkpoint_complete.json").write_text('{"files": {}}')
    assert resolve_resume_checkpoint("latest", tmp_path).name == "step_10"
    assert "ignoring checkpoints without checkpoint_complete.json" in caplog.text and "step_11" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="trainer_state.json is missing"):
        resolve_resume_checkpoint(tmp_path / "empty", tmp_path)


def test_non_finite_loss_saves_state_then_raises(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(nn.Linear(2, 1))
    manager = CheckpointManager(accelerator, tmp_path, save_every=1)
    stop_if_not_finite(torch.tensor(1.5), 4, manager)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 5") as raised:
        stop_if_not_finite(model(torch.tensor([[float("nan"), 0.0]])).sum(), 5, manager)
    assert raised.value.step == 5
    assert (raised.value.state_dir / "trainer_state.json").is_file()
    assert raised.value.state_dir.name == "nonfinite_step_5"
    assert list_checkpoints(tmp_path) == []  # never picked by `latest`


class _Savable:
    def __init__(self, fail=False):
        self.fail = fail

    def save_pretrained(self, path):
        (path / "config.json").write_text("{}")
        if self.fail:
            raise OSError("disk full")
        (path / "model.safetensors").write_text("weights")


def test_save_pretrained_atomic(tmp_path):
    final = tmp_path / "model"
    save_pretrained_atomic(final, _Savable(), lambda path: (path / "processor.json").write_text("{}"))
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors", "processor.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask  # like mkdir, not mkdtemp's 0o700
    with pytest.raises(OSError, match="disk full"):
        save_pretrained_atomic(final, _Savable(fail=True))
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors", "processor.json"]
    with pytest.raises(OSError):
        save_pretrained_atomic(tmp_path / "fresh", _Savable(fail=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no partial or temp folder left
    save_pretrained_atomic(final, _Savable())
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
