"""The files of one training checkpoint: the completeness marker, and the check that every file can be restored
without running code.

A checkpoint folder holds what `accelerator.save_state` writes (`model.safetensors`, `optimizer.bin`,
`random_states_<rank>.pkl`, `scaler.pt` with fp16), `trainer_state.json` (step, loss curve, run arguments: JSON)
and, written last, `checkpoint_complete.json` (the size of every other file). Nothing in it is unpickled with
code: `.bin` / `.pkl` / `.pt` files are read with `torch.load(weights_only=True)` (tensors, numbers, strings,
containers and numpy arrays only), weights are safetensors, our own state is JSON; the `.metadata` pickle of a
sharded FSDP state (which torch unpickles without restriction) is checked first to name only its data classes.
The learning-rate schedule is not stored at all: it is a function of the step and the run's arguments, rebuilt
on resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import pickle
import random
from typing import Any
import zipfile

from accelerate.utils.other import load as accelerate_load  # torch.load(weights_only=True) + numpy RNG types
import numpy as np
import torch

TRAINER_STATE_FILE = "trainer_state.json"
COMPLETE_MARKER = "checkpoint_complete.json"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")
RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored exactly (the message names the file and what to do)."""


def write_marker(folder: Path) -> None:
    """Write `checkpoint_complete.json` last: the sizes of all other files (a truncated file is then detected)."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != COMPLETE_MARKER}
    marker = folder / COMPLETE_MARKER
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump({"files": sizes}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and (folder / TRAINER_STATE_FILE).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"checkpoint file {path} is unreadable ({error})") from None


def _load_pickle(path: Path) -> Any:
    """`torch.load(weights_only=True)`: refuses any pickle that would import or call code."""
    try:
        return accelerate_load(path, map_location="cpu", mmap=zipfile.is_zipfile(path))
    except Exception as error:  # UnpicklingError (code refused), RuntimeError (truncated zip), ...
        reason = str(error).strip().splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint file {path} cannot be loaded safely ({type(error).__name__}: {reason})"
        ) from None


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:
        raise CheckpointError(f"checkpoint file {path} is not a valid safetensors file ({error})") from None


# The globals a torch.distributed.checkpoint `.metadata` pickle (FSDP `save_state`) may name: plain data classes.
DCP_METADATA_GLOBALS = {
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    *(
        ("torch.distributed.checkpoint.metadata", name)
        for name in (
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        )
    ),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in DCP_METADATA_GLOBALS or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _check_dcp_metadata(path: Path) -> None:
    """torch.distributed.checkpoint reads `.metadata` with plain `pickle.load`: allow only its data classes."""
    try:
        with open(path, "rb") as handle:
            _DataOnlyUnpickler(handle).load()
    except Exception as error:
        raise CheckpointError(
            f"checkpoint file {path} cannot be loaded safely ({type(error).__name__}: {error})"
        ) from None


def _check_shard_folder(folder: Path) -> None:
    """Files of a sharded (FSDP) state sub-folder: `.metadata` as above, pickles with weights_only. (The
    `.distcp` shards themselves are read by torch with `torch.load(weights_only=True)`.)"""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.endswith(".metadata"):
            _check_dcp_metadata(path)
        elif path.suffix in PICKLE_SUFFIXES:
            _load_pickle(path)


def _rng_problem(states: Any) -> str | None:
    if not isinstance(states, dict):
        return "not a mapping of RNG states"
    missing = [key for key in RNG_KEYS if key not in states]
    if torch.cuda.is_available() and "torch_cuda_manual_seed" not in states:
        missing.append("torch_cuda_manual_seed")
    return f"misses {', '.join(missing)}" if missing else None


def verify_checkpoint(folder: Path, process_index: int, sharded: bool, allow_inexact: bool, warn) -> dict[str, Any]:
    """Check every file of `folder` before `accelerator.load_state` touches it; returns the trainer state.

    Raises `CheckpointError` naming the first file that is missing, truncated (size differs from the marker),
    not loadable without code, or, for this process's RNG states, incomplete. With `allow_inexact`, problems
    with the RNG states only give a warning (`warn(message)`): the run continues, but no longer exactly.
    `sharded` (FSDP / DeepSpeed): weights and optimiser live in sub-folders their plugins load; not required here.
    """
    if not (folder / COMPLETE_MARKER).is_file():
        raise CheckpointError(
            f"checkpoint {folder} is incomplete ({COMPLETE_MARKER} is missing): its save did not finish"
        )
    marker = _read_json(folder / COMPLETE_MARKER)
    expected = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(expected, dict) or not all(isinstance(size, int) for size in expected.values()):
        raise CheckpointError(
            f"checkpoint file {folder / COMPLETE_MARKER} is not a completion marker (expected "
            '{"files": {name: size}}); the checkpoint cannot be trusted'
        )
    rng_file = f"random_states_{process_index}.pkl"
    required = {TRAINER_STATE_FILE} | (set() if sharded else {"model.safetensors", "optimizer.bin"})
    for name in sorted(required | {rng_file}):
        if not (folder / name).is_file():
            if name == rng_file and allow_inexact:
                warn(f"checkpoint {folder} has no {name}: resuming WITHOUT its random states (not exact)")
                continue
            raise CheckpointError(f"checkpoint {folder} lacks {name}; it cannot be restored")
    for sub_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
        _check_shard_folder(sub_folder)
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != COMPLETE_MARKER):
        try:
            if path.name in expected and path.stat().st_size != expected[path.name]:
                raise CheckpointError(
                    f"checkpoint file {path} is truncated or altered: {path.stat().st_size} bytes, "
                    f"{expected[path.name]} when saved"
                )
            if path.name.startswith("custom_checkpoint_"):
                raise CheckpointError(
                    f"checkpoint file {path} is a pickled custom state (older versions): never "
                    "loaded, it could run code; resume from a checkpoint saved by this version"
                )
            if path.suffix == ".safetensors":
                _check_safetensors(path)
            elif path.suffix == ".json":
                _read_json(path)
            elif path.suffix in PICKLE_SUFFIXES:
                loaded = _load_pickle(path)
                if path.name == rng_file and _rng_problem(loaded):
                    raise CheckpointError(f"checkpoint file {path} {_rng_problem(loaded)}")
        except CheckpointError as error:
            if path.name == rng_file and allow_inexact:
                warn(f"{error}: resuming WITHOUT these random states (not exact)")
                continue
            raise
    state = _read_json(folder / TRAINER_STATE_FILE)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"checkpoint file {folder / TRAINER_STATE_FILE} has no integer 'step'")
    return state


def rng_states_restored(folder: Path, process_index: int) -> bool:
    """Whether python, numpy and torch RNGs now hold the states saved in `random_states_<rank>.pkl` (accelerate
    only logs at INFO level when it cannot set them)."""
    saved = accelerate_load(folder / f"random_states_{process_index}.pkl", map_location="cpu")
    numpy_now, numpy_saved = np.random.get_state(), saved["numpy_random_seed"]
    return (
        torch.equal(torch.get_rng_state(), saved["torch_manual_seed"])
        and random.getstate() == saved["random_state"]
        and numpy_now[0] == numpy_saved[0]
        and np.array_equal(numpy_now[1], numpy_saved[1])
        and tuple(numpy_now[2:]) == tuple(numpy_saved[2:])
    )


__all__ = [
    "COMPLETE_MARKER",
    "CheckpointError",
    "TRAINER_STATE_FILE",
    "is_complete",
    "rng_states_restored",
    "verify_checkpoint",
    "write_marker",
]
