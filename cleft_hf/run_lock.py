"""One run per output folder: `output_dir/.cleft-run.lock`, held with `fcntl.flock` and naming the host, pid and
start time of the run using the folder.

A second run on the same folder is refused with one line naming the first. The kernel drops the lock when its
process dies (also on kill -9), so a lock file left behind by a dead run is stale: it is detected as such and
taken over with a warning. (On network filesystems, flock must be supported across hosts, e.g. NFSv4.)
Training (both stages) and the evaluation hold their output_dir this way (`hold_output_dir`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
import socket
import time

logger = logging.getLogger(__name__)

LOCK_FILE = ".cleft-run.lock"


class OutputDirInUseError(RuntimeError):
    """Another live run holds the output folder."""


class RunLock:
    """Hold `output_dir` for this process: `acquire()` (raises `OutputDirInUseError`), `release()`.

    Only the main process of a run takes the lock; `accelerate launch` workers share it through their main process.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_FILE
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(descriptor)
                os.close(descriptor)
                who = f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} since {owner.get('started', '?')}"
                raise OutputDirInUseError(
                    f"output_dir {self.path.parent} is in use by another run ({who}); wait for it to finish or choose "
                    "another output_dir"
                ) from None
            try:
                still_linked = os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                still_linked = False
            if not still_linked:  # the previous holder removed the file while we opened it: start over
                os.close(descriptor)
                continue
            previous = _read_owner(descriptor)
            if previous:
                logger.warning(
                    "output_dir %s: taking over the stale lock of a run that is gone (%s)", self.path.parent, previous
                )
            owner = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(owner).encode("utf-8"), 0)
            self._descriptor = descriptor
            return self
        raise OutputDirInUseError(f"could not take the lock {self.path}: other runs keep taking it")

    def release(self) -> None:
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)  # while still holding it (see the inode check in acquire)
            os.close(self._descriptor)
            self._descriptor = None


def hold_output_dir(accelerator, output_dir: str | os.PathLike) -> RunLock | None:
    """The main process locks `output_dir`; a refusal is raised on every process (returns the held lock on the
    main process, None elsewhere)."""
    from accelerate.utils import broadcast_object_list

    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = RunLock(output_dir).acquire()
        except OutputDirInUseError as error:
            refusal = str(error)
    if accelerator.num_processes > 1:
        refusal = [refusal]
        broadcast_object_list(refusal)
        refusal = refusal[0]
    if refusal:
        raise OutputDirInUseError(refusal)
    return lock


def _read_owner(descriptor: int) -> dict:
    try:
        return json.loads(os.pread(descriptor, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


__all__ = ["LOCK_FILE", "OutputDirInUseError", "RunLock", "hold_output_dir"]
