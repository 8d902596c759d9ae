"""Test support: which process writes what. `start(record_dir, watched)` installs a Python audit hook that notes
every file opened for writing, folder made, renamed or removed under the `watched` folders; at exit the process
writes `record_dir/writes-rank<RANK>.json` with its global rank, node (torchrun's GROUP_RANK), local rank and the
sorted `[event, path relative to its watched folder's name]` pairs. Files written by native code (safetensors)
are seen through the folders they are staged in (mkdir, rename)."""

from __future__ import annotations

import atexit
import json
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.mkdir": "mkdir", "os.remove": "remove", "os.rmdir": "rmdir", "shutil.rmtree": "rmtree"}


def _relative(path, roots: dict[str, str]) -> str | None:
    if isinstance(path, int) or path is None:
        return None
    path = os.path.abspath(os.fsdecode(path))
    for root, name in roots.items():
        if path == root or path.startswith(root + os.sep):
            return os.path.join(name, os.path.relpath(path, root))
    return None


def start(record_dir: str, watched: list[str]) -> None:
    roots = {os.path.realpath(os.path.abspath(folder)): os.path.basename(folder.rstrip(os.sep)) for folder in watched}
    roots.update({os.path.abspath(folder): os.path.basename(folder.rstrip(os.sep)) for folder in watched})
    seen: set[tuple[str, str]] = set()
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if not active[0]:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wxa+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            targets = [("write", path)] if writing else []
        elif event in ("os.rename", "os.replace"):
            targets = [("rename", args[0]), ("rename", args[1])]
        elif event in _PATH_EVENTS:
            targets = [(_PATH_EVENTS[event], args[0])]
        else:
            return
        for kind, path in targets:
            relative = _relative(path, roots)
            if relative is not None:
                seen.add((kind, relative))

    def dump() -> None:
        active[0] = False
        record = {
            "rank": int(os.environ.get("RANK", "0")),
            "node": int(os.environ.get("GROUP_RANK", "0")),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "writes": sorted(seen),
        }
        with open(os.path.join(record_dir, f"writes-rank{record['rank']}.json"), "w") as handle:
            json.dump(record, handle)

    sys.addaudithook(hook)
    atexit.register(dump)
