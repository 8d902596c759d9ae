"""Writing a folder atomically: build it under a hidden staging name next to its final place, then rename it there.

A reader (or a resumed run) sees either the complete old folder, the complete new one, or none; never a half. The
three writers of the project use it: training checkpoints, the final model folder and the Hub upload folder.

    with atomic_folder(Path("out/model")) as staging:   # staging = out/.model.partial-<tag>
        model.save_pretrained(staging)                  # on an exception: staging removed, out/model untouched

Names (all hidden, so folder listings and `latest` never pick them):
    .<name>.partial-<tag>   being written (tag unique per writer: host, pid and a random part)
    .<name>.trash-<tag>     being deleted (a folder is renamed to this first, then removed file by file)
`write_text_atomically(path, text)` does the same for one file. `remove_leftovers(parent)` deletes both kinds;
call it only when no other writer can be using `parent`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import shutil
import socket
import uuid

PARTIAL, TRASH = ".partial-", ".trash-"


def unique_tag() -> str:
    """`<host>-<pid>-<random>`: differs between runs, also between two runs started in the same second."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def staging_path(final: str | os.PathLike, tag: str | None = None) -> Path:
    """The hidden staging folder of `final` (same parent, so the final rename stays on one filesystem)."""
    final = Path(final)
    return final.parent / f".{final.name}{PARTIAL}{tag or unique_tag()}"


def _default_mode() -> int:
    """0o777 minus the process umask: what `mkdir` gives (`tempfile.mkdtemp` would give 0o700)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def discard_folder(path: str | os.PathLike) -> None:
    """Delete a folder so that it is never seen half-deleted: rename it to a trash name, then remove that."""
    path = Path(path)
    if not path.exists():
        return
    trash = path.parent / f".{path.name}{TRASH}{unique_tag()}"
    os.replace(path, trash)
    _fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def publish_folder(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Rename the complete `staging` folder to `final` (an existing `final` is discarded after the swap), with
    normal permissions (umask), and flush the parent directory entry."""
    staging, final = Path(staging), Path(final)
    staging.chmod(_default_mode())
    if final.exists():
        trash = final.parent / f".{final.name}{TRASH}{unique_tag()}"
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)
    return final


@contextmanager
def atomic_folder(final: str | os.PathLike, tag: str | None = None) -> Iterator[Path]:
    """Yield an empty staging folder for `final`; publish it when the block ends, remove it if the block raises."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} exists and is a file, not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(final, tag)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, final)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write a text file so that readers see the old or the new content, never a half: a hidden staging file
    next to it (flushed), then `os.replace`."""
    path = Path(path)
    staging = path.parent / f".{path.name}{PARTIAL}{unique_tag()}"
    try:
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        staging.chmod(0o666 & _default_mode())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_leftovers(parent: str | os.PathLike) -> list[Path]:
    """Remove staging and trash folders left in `parent` by killed writers; returns what was removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = [p for p in parent.iterdir() if p.name.startswith(".") and (PARTIAL in p.name or TRASH in p.name)]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


__all__ = [
    "atomic_folder",
    "discard_folder",
    "publish_folder",
    "remove_leftovers",
    "staging_path",
    "unique_tag",
    "write_text_atomically",
]
