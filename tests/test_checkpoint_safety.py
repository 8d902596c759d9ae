"""Checkpoints you can trust: no code runs on resume, exact or refused, one run per folder, clean failures."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import pickle
import shutil

import pytest
from test_training_utils import _train
import torch

from cleft_hf import atomic_folder
from cleft_hf.run_lock import LOCK_FILE, OutputDirInUseError, RunLock
from cleft_hf.training.checkpoint_files import COMPLETE_MARKER, CheckpointError
from cleft_hf.training.checkpointing import CheckpointManager, list_checkpoints

PAYLOAD_MARKER = "payload-ran"


class _Payload:
    """Unpickling this runs code: it writes `PAYLOAD_MARKER` next to the folder named by `target`."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return exec, (f"open({self.target!r}, 'w').write('pwned')",)


def _poison(folder: Path, name: str, target: Path) -> None:
    """Replace (or add) `name` in a checkpoint folder by a code-running pickle, and update the marker's sizes
    as an attacker would."""
    path = folder / name
    if name.endswith(".json") or name.endswith(".safetensors") or name.startswith("custom_"):
        path.write_bytes(pickle.dumps(_Payload(str(target))))
    else:
        torch.save(_Payload(str(target)), path)  # zip format, as torch.save/accelerate write it
    marker = folder / COMPLETE_MARKER
    if marker.is_file() and name != COMPLETE_MARKER:
        sizes = json.loads(marker.read_text())["files"]
        sizes[name] = path.stat().st_size
        marker.write_text(json.dumps({"files": sizes}))


def test_malicious_file_in_every_position_never_runs_code(tmp_path):
    _train(tmp_path / "run", steps=4, save_every=2, keep_last=1)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_4"
    files = sorted(p.name for p in checkpoint.iterdir())
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json", COMPLETE_MARKER} <= set(
        files
    )
    assert not any(name.startswith(("custom_checkpoint", "scheduler")) for name in files)  # nothing pickled with code
    positions = files + ["custom_checkpoint_0.pkl", "scheduler.bin", "sampler.bin", "scaler.pt"]
    for name in positions:
        run = tmp_path / f"poisoned-{name}"
        shutil.copytree(tmp_path / "run", run)
        target = tmp_path / f"{PAYLOAD_MARKER}-{name}"
        _poison(run / "checkpoints" / "step_4", name, target)
        with pytest.raises(CheckpointError) as raised:
            _train(run, steps=6, save_every=2, resume="latest")
        assert not target.exists(), f"code in {name} ran on resume"
        message = str(raised.value)
        assert "\n" not in message and (name in message or COMPLETE_MARKER in message), message


@pytest.mark.parametrize("damage", ["truncate", "wrong_content", "delete"])
def test_unrestorable_random_states_fail_with_one_line_unless_allowed(tmp_path, damage, caplog):
    _train(tmp_path / "run", steps=2, save_every=2)
    rng_file = tmp_path / "run" / "checkpoints" / "step_2" / "random_states_0.pkl"
    if damage == "truncate":
        rng_file.write_bytes(rng_file.read_bytes()[:-16])
    elif damage == "wrong_content":
        torch.save({"step": 0, "torch_manual_seed": torch.get_rng_state()}, rng_file)  # misses numpy/python states
        marker = rng_file.parent / COMPLETE_MARKER
        sizes = json.loads(marker.read_text())["files"]
        marker.write_text(json.dumps({"files": {**sizes, rng_file.name: rng_file.stat().st_size}}))
    else:
        rng_file.unlink()
    with pytest.raises(CheckpointError, match="random_states_0.pkl") as raised:
        _train(tmp_path / "run", steps=4, save_every=2, resume="latest")
    assert "\n" not in str(raised.value)
    with caplog.at_level(logging.WARNING):
        _, manager = _train(tmp_path / "run", steps=4, save_every=0, resume="latest", allow_inexact=True)
    assert any("not exact" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_rng_states_that_do_not_take_effect_are_detected(tmp_path, monkeypatch):
    _train(tmp_path / "run", steps=2, save_every=2)
    import accelerate.checkpointing as accelerate_checkpointing

    monkeypatch.setattr(accelerate_checkpointing.torch, "set_rng_state", lambda state: None)  # silently skipped
    with pytest.raises(CheckpointError, match="random states .* could not be restored"):
        _train(tmp_path / "run", steps=4, save_every=2, resume="latest", init_seed=123)


def test_one_run_per_output_folder(tmp_path, caplog):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(OutputDirInUseError, match=f"in use by another run \\(pid {os.getpid()} on host"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    # A lock file left by a killed run (no process holds it): stale, taken over with a warning.
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "gone", "pid": 999999, "started": "earlier"}))
    with caplog.at_level(logging.WARNING):
        again = RunLock(tmp_path).acquire()
    assert "stale lock" in caplog.text and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    again.release()
    # Two runs never share a staging name.
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    tags = {CheckpointManager(accelerator, tmp_path / "a", save_every=1).tag for _ in range(2)}
    assert len(tags) == 2


def test_killed_rotation_never_leaves_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    _train(tmp_path / "run", steps=4, save_every=2, keep_last=0)
    real_rmtree = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        (Path(path) / "model.safetensors").unlink()  # the first file is gone, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_folder.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", steps=6, save_every=2, keep_last=2, resume="latest")
    monkeypatch.setattr(atomic_folder.shutil, "rmtree", real_rmtree)
    listed = list_checkpoints(tmp_path / "run")
    assert [step for step, _ in listed] == [4, 6]
    assert all((path / "model.safetensors").is_file() for _, path in listed)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob(".step_2.trash-*")]  # renamed first
    _train(tmp_path / "run", steps=8, save_every=2, keep_last=2, resume="latest")  # next run cleans up
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))


def test_full_disk_during_save_names_the_folder_and_cleans_up(tmp_path, monkeypatch):
    _train(tmp_path / "run", steps=2, save_every=2)
    real_save = torch.save

    def disk_fills_up(obj, f, *args, **kwargs):  # what torch's zip writer does on ENOSPC (the message)
        Path(f).write_bytes(b"\0" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", disk_fills_up)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(
        CheckpointError, match=r"no space left on .*checkpoints: a checkpoint needs ~\d+ kB, 1 kB free"
    ):
        _train(tmp_path / "run", steps=4, save_every=2, resume="latest")
    monkeypatch.setattr(torch, "save", real_save)
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_2"]  # no staging folder left, step_2 intact


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    _train(tmp_path / "run", steps=2, save_every=2)

    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(CheckpointError, match="cannot write checkpoints to .*: Read-only file system"):
        _train(tmp_path / "run", steps=4, save_every=2, resume="latest")


def test_sharded_state_metadata_is_checked_before_torch_unpickles_it(tmp_path):
    import warnings

    import torch.distributed.checkpoint as dcp

    _train(tmp_path / "run", steps=2, save_every=2)
    shards = tmp_path / "run" / "checkpoints" / "step_2" / "pytorch_model_fsdp_0"  # where FSDP save_state writes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"model": {"w": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)}}, checkpoint_id=shards)
    _train(tmp_path / "run", steps=2, resume="latest")  # genuine metadata passes
    target = tmp_path / PAYLOAD_MARKER
    (shards / ".metadata").write_bytes(pickle.dumps(_Payload(str(target))))
    with pytest.raises(CheckpointError, match=r"pytorch_model_fsdp_0/\.metadata cannot be loaded safely"):
        _train(tmp_path / "run", steps=4, resume="latest")
    assert not target.exists()
