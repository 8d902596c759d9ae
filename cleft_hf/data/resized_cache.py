"""A resized copy of a dataset's images, written once by ``python -m cleft_hf.data.preprocess`` and read by the
loaders instead of the originals (``resized="auto"``).

Layout: ``<data_root>/cleft_resized_<size>px/`` (or any folder passed as ``resized``) holding ``cleft_resized.json``
(size, source root, counts) and one PNG per source image at ``<path relative to data_root>.png``: grey images
whose shorter side is ``size`` (never upscaled). DICOMs are stored after their modality LUT, VOI and MONOCHROME1
inversion as 16-bit PNGs whose values are ``round(x * 65535)`` of :func:`~cleft_hf.data.read_dicom`'s [0, 1]
output (marked by the PNG text chunk ``cleft_hf_scale``, which the transforms honour); 8-bit sources (JPEG, PNG)
as 8-bit PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import logging
import os
from pathlib import Path
import re

import numpy as np

from .image_checks import files_exist

logger = logging.getLogger(__name__)

MANIFEST = "cleft_resized.json"
SCALE_KEY = "cleft_hf_scale"
_FOLDER = re.compile(r"cleft_resized_(\d+)px$")


def resized_folder_name(size: int) -> str:
    return f"cleft_resized_{int(size)}px"


def cached_path(root: Path, folder: Path, source: str) -> str:
    """Where the resized copy of ``source`` lives: its path relative to ``root`` (absolute paths outside ``root``
    under ``_abs/``) with ``.png`` appended."""
    root_text = str(root).rstrip(os.sep) + os.sep
    relative = source[len(root_text) :] if source.startswith(root_text) else "_abs" + os.sep + source.lstrip(os.sep)
    return str(folder / relative) + ".png"


def find_resized(root: Path, resized: str | int | os.PathLike | None) -> Path | None:
    """The resized-image folder a loader reads: None (originals); "auto" (``root/cleft_resized_<N>px`` when
    present, the largest N if several); an int N (that folder, which must exist); or a folder path."""
    if resized is None:
        return None
    if isinstance(resized, str) and resized == "auto":
        found = sorted(
            (int(m.group(1)), p)
            for p in root.glob("cleft_resized_*px")
            if (m := _FOLDER.search(p.name)) and (p / MANIFEST).is_file()
        )
        if len(found) > 1:
            logger.info(
                "several resized copies in %s (%s); reading the largest (pass resized=<size> to choose)",
                root,
                ", ".join(str(size) for size, _ in found),
            )
        return found[-1][1] if found else None
    folder = root / resized_folder_name(resized) if isinstance(resized, int) else Path(resized).expanduser()
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(
            f"resized images {folder} not found (no {MANIFEST}); write them with "
            f"`python -m cleft_hf.data.preprocess` or pass resized=None for the originals"
        )
    return folder


def use_resized(root: Path, folder: Path | None, paths: Sequence[str]) -> np.ndarray:
    """``paths`` (N,) with each original replaced by its resized copy where that exists (checked in parallel);
    originals without a copy (an unfinished preprocessing run) are kept and counted in the log."""
    paths = np.asarray(paths, dtype=object)
    if folder is None or not len(paths):
        return paths
    candidates = np.asarray([cached_path(root, folder, str(p)) for p in paths], dtype=object)
    present = files_exist(candidates)
    if not present.all():
        logger.warning(
            "%d of %d images have no resized copy in %s; reading their originals (rerun the "
            "preprocessing to complete it)",
            int((~present).sum()),
            len(paths),
            folder,
        )
    logger.info("reading %d resized images from %s", int(present.sum()), folder)
    return np.where(present, candidates, paths)


def manifest_file(folder: Path | None) -> list[Path]:
    """The manifest as a cache-key table (so a new or completed preprocessing run invalidates cached tables)."""
    return [folder / MANIFEST] if folder is not None else []


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_manifest(folder: Path, size: int, root: Path, counts: dict[str, int], failures: Sequence[str] = ()) -> None:
    """The folder's manifest (the loaders read a folder only once it exists) and `failed.txt` when files failed."""
    if failures:
        _write_atomically(folder / "failed.txt", "\n".join(failures) + "\n")
    _write_atomically(folder / MANIFEST, json.dumps({"size": int(size), "source_root": str(root), **counts}, indent=2))


def write_shard_manifest(
    folder: Path, size: int, root: Path, shard: tuple[int, int], counts: dict[str, int], failures: Sequence[str] = ()
) -> bool:
    """Record shard `(i, N)` as done (`cleft_resized.shard-i-of-N.json`); when all N are recorded, write the folder's
    manifest with their summed counts and failures. Returns whether this call completed the folder."""
    index, count = shard
    record = {"size": int(size), "source_root": str(root), **counts, "failures": list(failures)}
    _write_atomically(folder / f"cleft_resized.shard-{index}-of-{count}.json", json.dumps(record, indent=2))
    parts = [folder / f"cleft_resized.shard-{i}-of-{count}.json" for i in range(count)]
    if not all(part.is_file() for part in parts):
        return False
    records = [json.loads(part.read_text(encoding="utf-8")) for part in parts]
    if any(r["size"] != int(size) or r["source_root"] != str(root) for r in records):
        raise ValueError(f"the shards in {folder} were written with other sizes or data roots; remove it and rerun")
    totals = {key: sum(r[key] for r in records) for key in counts}
    write_manifest(folder, size, root, totals, [line for r in records for line in r["failures"]])
    return True
