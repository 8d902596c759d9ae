"""Real stage runs faulted on purpose: kill -9 in the middle of a save, SIGTERM, NaN with BatchNorm, changed
arguments on resume, two runs on one output folder. Resumption stays exact (max abs diff 0 on every tensor)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys

from conftest import tiny_run_overrides
import pytest
from safetensors.torch import load_file
import torch

from cleft_hf.arguments import load_arguments
from cleft_hf.data import ImageDecodeError
from cleft_hf.run_lock import LOCK_FILE, OutputDirInUseError, RunLock
from cleft_hf.training import run_log
from cleft_hf.training.checkpoint_files import CheckpointError
from cleft_hf.training.checkpointing import list_checkpoints
from cleft_hf.training.config import PretrainArguments
from cleft_hf.training.contrastive_pretraining import ContrastivePretraining, run_pretraining
from cleft_hf.training.optim import build_scheduler
from cleft_hf.training.step_loop import NonFiniteLossError
from cleft_hf.training.stop_signals import TrainingInterrupted

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "cleft_hf" / "demo" / "demo.yaml"
EXACT = {"augment": False, "label_caption_prob": 0.0}  # data-loading randomness is not part of the state


def _overrides(demo_tree, demo_llm, output_dir, **extra) -> dict:
    return {**tiny_run_overrides(demo_tree, demo_llm, output_dir), **EXACT, **extra}


def _args(demo_tree, demo_llm, output_dir, **extra) -> PretrainArguments:
    return load_arguments(
        PretrainArguments, DEMO_CONFIG, _overrides(demo_tree, demo_llm, output_dir, **extra), section="pretrain"
    )


def _assert_same_weights(folder: Path, reference: Path) -> None:
    got, expected = load_file(folder / "model.safetensors"), load_file(reference / "model.safetensors")
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_tree, demo_llm):
    output = tmp_path_factory.mktemp("uninterrupted")
    run_pretraining(_args(demo_tree, demo_llm, output))
    return output / "model"


KILL_DURING_SAVE = """
import json, os, signal, sys
from cleft_hf.training import checkpointing
from cleft_hf.arguments import load_arguments
from cleft_hf.training.config import PretrainArguments
from cleft_hf.training.contrastive_pretraining import run_pretraining

real_write_marker = checkpointing.write_marker

def killed_before_marker(folder):  # the files of step 4 are written, its marker is not
    if folder.name.startswith(".step_4."):
        os.kill(os.getpid(), signal.SIGKILL)
    real_write_marker(folder)

checkpointing.write_marker = killed_before_marker
run_pretraining(load_arguments(PretrainArguments, sys.argv[1], json.loads(sys.argv[2]), section="pretrain"))
"""


def test_kill_9_during_a_save_then_resume_is_exact(tmp_path, demo_tree, demo_llm, uninterrupted):
    output = tmp_path / "run"
    overrides = _overrides(demo_tree, demo_llm, output, max_steps=6)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(DEMO_CONFIG), json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    root = output / "checkpoints"
    assert [step for step, _ in list_checkpoints(output)] == [2]  # the half-saved step 4 does not count
    assert list(root.glob(".step_4.partial-*")) and (output / LOCK_FILE).is_file()  # left by the killed run
    run_pretraining(_args(demo_tree, demo_llm, output, resume_from_checkpoint="latest"))  # stale lock taken over
    _assert_same_weights(output / "model", uninterrupted)
    assert not list(root.glob(".*")) and not (output / LOCK_FILE).exists()


def test_sigterm_saves_and_exits_cleanly_then_resume_is_exact(
    tmp_path, demo_tree, demo_llm, uninterrupted, monkeypatch
):
    original_end_step = run_log.TrainingLog.end_step

    def signalled_at_step_3(self, step, lr, progress=None):
        original_end_step(self, step, lr, progress)
        if step == 3:  # not a save step (save_every 2): the signal itself makes the checkpoint
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run_log.TrainingLog, "end_step", signalled_at_step_3)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_pretraining(_args(demo_tree, demo_llm, tmp_path))
    assert stopped.value.code == 128 + signal.SIGTERM and "stopped by SIGTERM after step 3" in str(stopped.value)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3] and not (tmp_path / "model").exists()
    assert not (tmp_path / LOCK_FILE).exists()
    monkeypatch.setattr(run_log.TrainingLog, "end_step", original_end_step)
    run_pretraining(_args(demo_tree, demo_llm, tmp_path, resume_from_checkpoint="latest"))
    _assert_same_weights(tmp_path / "model", uninterrupted)


def test_nan_saves_the_last_finite_state_and_resume_applies_a_new_learning_rate(
    tmp_path, demo_tree, demo_llm, monkeypatch, caplog
):
    model_config = {
        **tiny_run_overrides(demo_tree, demo_llm, tmp_path)["model_config"],
        "vision_model_name": "resnet10t",
        "vision_model_kwargs": {},
    }
    tower = {"model_config": model_config, "save_every": 1, "keep_last": 0}
    original_loss = ContrastivePretraining.loss
    calls = []

    def nan_images_in_step_2(self, model, batch):
        calls.append(1)
        if len(calls) == 2:  # the forward pass also writes NaN into the BatchNorm running statistics
            batch = {**batch, "pixel_values": batch["pixel_values"] * float("nan")}
        return original_loss(self, model, batch)

    monkeypatch.setattr(ContrastivePretraining, "loss", nan_images_in_step_2)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 2") as raised:
        run_pretraining(_args(demo_tree, demo_llm, tmp_path, **tower))
    state_dir = raised.value.state_dir
    assert state_dir.name == "nonfinite_step_2" and str(state_dir) in str(raised.value)
    saved = load_file(state_dir / "model.safetensors")
    assert any("running_mean" in key for key in saved)
    assert all(torch.isfinite(value).all() for value in saved.values())
    _assert_same_weights(state_dir, tmp_path / "checkpoints" / "step_1")  # = the state before step 2
    monkeypatch.setattr(ContrastivePretraining, "loss", original_loss)

    with pytest.raises(CheckpointError, match=r"per_device_batch_size \(8 -> 4\)"):
        run_pretraining(
            _args(
                demo_tree, demo_llm, tmp_path, **tower, resume_from_checkpoint=str(state_dir), per_device_batch_size=4
            )
        )
    new_lr = 5e-3
    with caplog.at_level(logging.INFO, logger="cleft_hf"):
        run_pretraining(
            _args(demo_tree, demo_llm, tmp_path, **tower, resume_from_checkpoint=str(state_dir), learning_rate=new_lr)
        )
    assert "resuming with changed learning_rate" in caplog.text
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=new_lr)
    schedule = build_scheduler(optimizer, 1, 4, "cosine")
    for _ in range(2):
        optimizer.step()
        schedule.step()
    assert "step 2 loss" in caplog.text and f"lr {optimizer.param_groups[0]['lr']:.3g}" in caplog.text


def test_a_second_run_on_the_same_output_dir_is_refused(tmp_path, demo_tree, demo_llm):
    holder = RunLock(tmp_path).acquire()  # a first run holding the folder
    try:
        with pytest.raises(OutputDirInUseError, match="is in use by another run") as refused:
            run_pretraining(_args(demo_tree, demo_llm, tmp_path))
        assert "\n" not in str(refused.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.release()


def _corrupt_every_third_training_image(demo_tree: Path, copy: Path) -> list[str]:
    from datasets import Image

    from cleft_hf.data import load_mimic_cxr

    shutil.copytree(demo_tree, copy)
    cells = load_mimic_cxr(copy)["train"].cast_column("image", Image(decode=False))["image"]
    damaged = sorted({cell["path"] for cell in cells})[::3]
    for path in damaged:  # a truncated JPEG: PIL's "image file is truncated (N bytes not processed)"
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
    return damaged


def test_corrupt_images_name_their_file_or_are_skipped_and_counted(tmp_path, demo_tree, demo_llm):
    data = tmp_path / "data"
    damaged = _corrupt_every_third_training_image(demo_tree, data)
    with pytest.raises(ImageDecodeError, match=r"cannot decode image .*\.jpg: image file is truncated"):
        run_pretraining(_args(demo_tree, demo_llm, tmp_path / "strict", data_root=str(data)))
    run_pretraining(_args(demo_tree, demo_llm, tmp_path / "skip", data_root=str(data), skip_bad=True))
    log = json.loads((tmp_path / "skip" / "model" / "training_log.json").read_text())
    skipped = log["skipped_images"]["stage 1 (contrastive)"]
    assert (
        skipped["count"] >= 1 and set(skipped["files"]) <= set(damaged) and len(skipped["files"]) == skipped["count"]
    )
    help_text = subprocess.run(
        [sys.executable, str(REPO / "examples" / "pretrain.py"), "-h"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    ).stdout
    assert "--verify" in help_text and "--skip_bad" in help_text
