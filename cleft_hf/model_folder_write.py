"""Every model folder (final model, best model, Hub upload folder) is written with the checkpoints' care:
free space checked before writing, the folder written atomically (`cleft_hf.atomic_folder`), and a full or
read-only disk reported as ONE line (`ModelFolderWriteError`, an `OSError`) instead of a library traceback.

    write_model_folder_safely(out / "model", [save_model, processor, write_log], needed_bytes=tensor_bytes(sd))

`savables` are objects with `save_pretrained(path)` or callables `fn(path)`, written in that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import errno
import os
from pathlib import Path
import shutil
from typing import Any

from .atomic_folder import atomic_folder

SPACE_MARGIN = 1.1  # the folder's tensors plus 10 % for config, tokenizer, card and filesystem slack
_DISK_FULL_WORDS = ("no space left", "os error 28", "disk quota exceeded", "os error 122")


class ModelFolderWriteError(OSError):
    """A model folder could not be written (full or read-only disk); nothing partial was left behind."""


def human_size(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MB" if n_bytes >= 2**20 / 10 else f"{n_bytes / 1024:.0f} kB"


def tensor_bytes(state_dict: Mapping[str, Any] | None) -> int:
    """Bytes of the tensors of a state dict (what the safetensors files will hold)."""
    return sum(t.numel() * t.element_size() for t in (state_dict or {}).values() if hasattr(t, "element_size"))


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free space on the filesystem that will hold `folder` (its nearest existing parent), None if unknown."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC / EDQUOT, also when wrapped by a library (safetensors' `SafetensorError` carries only the text)."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(word in str(error).lower() for word in _DISK_FULL_WORDS)


def write_model_folder_safely(
    folder: str | os.PathLike, savables: Iterable[Any], needed_bytes: int = 0, what: str = "the model folder"
) -> Path:
    """Write `folder` atomically from `savables`; `ModelFolderWriteError` (one line, `folder` untouched, the
    staging folder removed) when the disk lacks ~`needed_bytes` or fills up / refuses the write."""
    folder = Path(folder)
    savables = list(savables)
    if not savables:
        raise ValueError("write_model_folder_safely needs at least one object to save")
    free = free_bytes(folder)
    if needed_bytes and free is not None and free < SPACE_MARGIN * needed_bytes:
        raise _no_space(folder, needed_bytes, free, what)
    try:
        with atomic_folder(folder) as staging:
            for savable in savables:
                if hasattr(savable, "save_pretrained"):
                    savable.save_pretrained(staging)
                elif callable(savable):
                    savable(staging)
                else:
                    raise TypeError(f"cannot save {type(savable).__name__}: no save_pretrained and not callable")
    except Exception as error:
        if is_disk_full(error):
            raise _no_space(folder, needed_bytes, free_bytes(folder), what) from error
        if getattr(error, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ModelFolderWriteError(
                f"cannot write {what} {folder}: {error.strerror}; use another output_dir"
            ) from error
        raise
    return folder


def _no_space(folder: Path, needed: int, free: int | None, what: str) -> ModelFolderWriteError:
    need = f": it needs ~{human_size(needed)}" if needed else ""
    have = f", {human_size(free)} free" if free is not None else ""
    return ModelFolderWriteError(
        f"no space left for {what} {folder}{need}{have}; nothing of it was written. Free "
        "space or use another output_dir"
    )


__all__ = [
    "ModelFolderWriteError",
    "free_bytes",
    "human_size",
    "is_disk_full",
    "tensor_bytes",
    "write_model_folder_safely",
]
