"""Cache of the Arrow tables a loader builds (one Arrow IPC file per split, memory-mapped back), so that the second
load of the same dataset tree skips reading the CSVs and reports and building the table. (``save_to_disk`` is not
used: it would copy every image file into the cache, as it embeds the files of ``Image`` columns.)

Key: loader name, resolved root, the loader's arguments, size + mtime of its table files and a hash of the data
loaders' source code. A hit is used only when the files it was built from are unchanged: every report file it
read has the same size + mtime, and (for ``verify`` other than "none") every image file still exists -- both
checked in parallel threads; otherwise the table is rebuilt. Images are not re-decoded on a hit ("header" /
"decode" results are those of the build), and images skipped as bad (``skip_bad``) stay skipped until the tables
change or ``cache=False``. Location: ``$CLEFT_HF_LOAD_CACHE``, else
``<datasets cache>/cleft_hf_loads``; delete it to drop all cached tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
import shutil
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, DatasetInfo, Features
from datasets.table import MemoryMappedTable
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._tables import LoadReport
from .image_checks import files_exist, map_parallel

logger = logging.getLogger(__name__)

CACHE_ENV = "CLEFT_HF_LOAD_CACHE"
_WATCHED = "watched_files.parquet"
_REPORT = "load_report.json"
_FEATURES = "features.json"


def cache_root() -> Path:
    """Where loader tables are cached (``$CLEFT_HF_LOAD_CACHE`` or the datasets cache)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path(datasets.config.HF_DATASETS_CACHE) / "cleft_hf_loads"


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _stamp(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def cache_key(name: str, root: Path, arguments: dict[str, Any], tables: Sequence[Path]) -> str:
    parts = {
        "name": name,
        "root": str(Path(root).resolve()),
        "code": _code_hash(),
        "arguments": {key: repr(value) for key, value in sorted(arguments.items())},
        "tables": [(str(Path(t).resolve()), *_stamp(str(t))) for t in tables],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def image_paths(result: DatasetDict, column: str = "image") -> list[str]:
    """All image paths of a DatasetDict, read from Arrow (``Image`` struct paths or plain strings)."""
    paths: list[str] = []
    for split in result.values():
        values = split.data.column(column)
        if str(values.type).startswith("struct"):
            values = pc.struct_field(values, "path")
        paths.extend(values.to_pylist())
    return paths


def _unchanged(folder: Path, result: DatasetDict, verify: str) -> bool:
    watched = pd.read_parquet(folder / _WATCHED) if (folder / _WATCHED).is_file() else None
    if watched is not None and len(watched):
        stamps = np.array(map_parallel(_stamp, watched["path"].tolist(), 32), dtype=np.int64).reshape(-1, 2)
        if not ((stamps[:, 0] == watched["size"].to_numpy()) & (stamps[:, 1] == watched["mtime_ns"].to_numpy())).all():
            return False
    return verify == "none" or bool(files_exist(image_paths(result)).all())


def _write_tables(folder: Path, result: DatasetDict) -> None:
    folder.mkdir(parents=True)
    features = {}
    for name, split in result.items():
        table = split.with_format("arrow")[:]  # the rows as selected (indices mapping applied)
        with pa.OSFile(str(folder / f"{name}.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        features[name] = split.features.to_dict()
    (folder / _FEATURES).write_text(json.dumps(features), encoding="utf-8")


def _read_tables(folder: Path) -> DatasetDict:
    features = json.loads((folder / _FEATURES).read_text(encoding="utf-8"))
    return DatasetDict(
        {
            name: Dataset(
                MemoryMappedTable.from_file(str(folder / f"{name}.arrow")),
                info=DatasetInfo(features=Features.from_dict(split_features)),
            )
            for name, split_features in features.items()
        }
    )


def _save(folder: Path, result: DatasetDict, report: LoadReport, watched: Sequence[str]) -> None:
    temporary = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        _write_tables(temporary, result)
        stamps = np.array(map_parallel(_stamp, list(watched), 32), dtype=np.int64).reshape(-1, 2)
        pd.DataFrame({"path": list(watched), "size": stamps[:, 0], "mtime_ns": stamps[:, 1]}).to_parquet(
            temporary / _WATCHED
        )
        (temporary / _REPORT).write_text(json.dumps(dataclasses.asdict(report)), encoding="utf-8")
        if folder.exists():  # another process (e.g. a DDP rank) cached the same table meanwhile
            shutil.rmtree(temporary, ignore_errors=True)
            return
        os.replace(temporary, folder)
    except OSError as err:  # a full or read-only cache must not stop a load
        logger.warning("could not cache the loaded table in %s: %s", folder, err)
        shutil.rmtree(temporary, ignore_errors=True)


def cached_load(
    name: str,
    root: Path,
    arguments: dict[str, Any],
    tables: Sequence[Path],
    build: Callable[[], tuple[DatasetDict, LoadReport, Sequence[str]]],
    verify: str,
    cache: bool = True,
) -> tuple[DatasetDict, LoadReport]:
    """``build()`` -> (DatasetDict, LoadReport, files it read besides the tables), cached as described above."""
    if not cache:
        return build()[:2]
    folder = cache_root() / f"{name}-{cache_key(name, root, arguments, tables)}"
    if (folder / _REPORT).is_file():
        try:
            result = _read_tables(folder)
            report = LoadReport(**json.loads((folder / _REPORT).read_text(encoding="utf-8")))
            if _unchanged(folder, result, verify):
                logger.info("%s: table loaded from the cache %s", report.dataset, folder)
                return result, report
        except Exception as err:  # a damaged cache entry is rebuilt
            logger.warning("ignoring the unreadable cache entry %s (%s: %s)", folder, type(err).__name__, err)
        shutil.rmtree(folder, ignore_errors=True)
    result, report, watched = build()
    if any(len(split) for split in result.values()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        _save(folder, result, report, watched)
    return result, report
