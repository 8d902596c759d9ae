"""Write a resized copy of a dataset's images once, which the loaders then read instead of the originals.

    python -m cleft_hf.data.preprocess --dataset embed --data_root /data/embed --size 518 --num_workers 16
    python -m cleft_hf.data.preprocess ... --shard 3/8     # node (or SLURM array task) 3 of 8, 0-based

Loads the dataset with its loader (so exactly the images it uses), then converts every image in a process pool
with a progress bar: DICOMs are decoded at reduced size (:func:`~cleft_hf.data.read_dicom` ``min_size``) and
written as 16-bit PNGs after VOI / MONOCHROME1 handling, JPEGs and PNGs as 8-bit PNGs, all with the shorter side
``--size`` (never upscaled). Resumable: finished files are skipped, each file is written under a temporary name
and renamed. The folder layout is described in :mod:`cleft_hf.data.resized_cache`; loaders use the copy with
their default ``resized="auto"``.

With ``--shard i/N`` a run converts every N-th image from the i-th on (of the sorted list), so N runs on N machines
(a shared folder) write disjoint parts of the same copy; each records ``cleft_resized.shard-i-of-N.json`` and the
last one to finish writes the folder's manifest: only then do loaders read the copy. The union is the folder a
single run writes, file for file; a killed shard resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import logging
from multiprocessing import get_context
import os
from pathlib import Path
import sys

import numpy as np

logger = logging.getLogger(__name__)


def _shorter_side(image, size: int):
    from PIL import Image

    width, height = image.size
    if min(width, height) <= size:
        return image
    scale = size / min(width, height)
    return image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS, reducing_gap=2.0
    )


def resized_image(source: str, size: int):
    """(PIL image to save as PNG, PNG text chunks) for one source image."""
    from PIL import Image

    from .dicom import is_dicom, read_dicom
    from .resized_cache import SCALE_KEY
    from .transforms import open_image

    if is_dicom(source):
        image = _shorter_side(Image.fromarray(read_dicom(source, min_size=size), mode="F"), size)
        values = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 65535.0), 0, 65535).astype(np.uint16)
        return Image.fromarray(values), {SCALE_KEY: "65535"}
    image = open_image(source, size)
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit / integer / float sources keep their values
        resized = _shorter_side(image.convert("F"), size)
        return Image.fromarray(np.clip(np.rint(np.asarray(resized)), 0, 65535).astype(np.uint16)), {}
    return _shorter_side(image.convert("L"), size), {}


def convert(job: tuple[str, str, int]) -> tuple[str, str]:
    """(status, detail) for one (source, target, size): "skipped" (target exists), "written" or "failed"."""
    from PIL import PngImagePlugin

    source, target, size = job
    if os.path.exists(target):
        return "skipped", target
    try:
        image, texts = resized_image(source, size)
        info = PngImagePlugin.PngInfo()
        for key, value in texts.items():
            info.add_text(key, value)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = f"{target}.tmp"  # one writer per target; a killed run's leftover is overwritten on resume
        image.save(temporary, format="PNG", pnginfo=info, compress_level=1)
        os.replace(temporary, target)
    except Exception as err:  # one bad file must not stop the run; it is listed at the end
        return "failed", f"{source}: {type(err).__name__}: {err}"
    return "written", target


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/N" -> (i, N) with 0 <= i < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(
            f"--shard i/N needs 0 <= i < N (0-based, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), got {text!r}"
        )
    return index, count


def preprocess(
    dataset: str,
    data_root: str | os.PathLike,
    size: int = 518,
    *,
    output_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    dataset_kwargs: dict | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Resize every image the dataset's loader uses into ``output_dir`` (default ``data_root/cleft_resized_<size>px``);
    returns the counts (written / skipped / failed) and writes the folder's manifest. ``shard=(i, N)``: only every
    N-th image from the i-th on; the manifest is written by the shard that completes the set."""
    from tqdm.auto import tqdm

    from .load_cache import image_paths
    from .registry import get_dataset_spec
    from .resized_cache import cached_path, resized_folder_name, write_manifest, write_shard_manifest

    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    root = Path(data_root).expanduser()
    spec = get_dataset_spec(dataset)
    data = spec.load(str(root), **{**(dataset_kwargs or {}), "resized": None})
    folder = Path(output_dir).expanduser() if output_dir is not None else root / resized_folder_name(size)
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(set(image_paths(data)))
    index, count = shard or (0, 1)
    jobs = [(source, cached_path(root, folder, source), size) for source in sources[index::count]]
    todo = [job for job in jobs if not os.path.exists(job[1])]  # a resumed run starts no process for done files
    counts = {"written": 0, "skipped": len(jobs) - len(todo), "failed": 0}
    failures: list[str] = []
    chunksize = 8
    workers = min(max(1, num_workers or os.cpu_count() or 1), -(-len(todo) // chunksize))
    with get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
        results = pool.imap_unordered(convert, todo, chunksize=chunksize)
        desc = f"resizing to {size} px" + (f" (shard {index}/{count})" if shard else "")
        bar = tqdm(results, total=len(jobs), initial=counts["skipped"], desc=desc, disable=not progress)
        for status, detail in bar:
            counts[status] += 1
            if status == "failed":
                failures.append(detail)
    if shard is None:
        write_manifest(folder, size, root, {**counts, "images": len(jobs)}, failures)
    else:
        write_shard_manifest(folder, size, root, shard, {**counts, "images": len(jobs)}, failures)
    if failures:
        logger.warning("%d images could not be converted (listed in %s), e.g. %s", len(failures), folder, failures[0])
    return {**counts, "folder": str(folder)}


class _Serial:
    """In-process stand-in for a Pool (``--num_workers 1``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(function, jobs, chunksize=1):
        return map(function, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cleft_hf.data.preprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="dataset name (mimic_cxr, chexpert, rsna, embed, ...)")
    parser.add_argument("--data_root", required=True, help="the dataset folder as downloaded")
    parser.add_argument("--size", type=int, default=518, help="shorter side of the written images in pixels")
    parser.add_argument("--output_dir", default=None, help="default: <data_root>/cleft_resized_<size>px")
    parser.add_argument("--num_workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument(
        "--dataset_kwargs", default=None, help='loader arguments as JSON, e.g. \'{"task": "density"}\''
    )
    parser.add_argument("--shard", default=None, help="i/N: this run writes the i-th of N disjoint parts (0-based)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        kwargs = json.loads(args.dataset_kwargs) if args.dataset_kwargs else {}
        shard = parse_shard(args.shard) if args.shard else None
        summary = preprocess(
            args.dataset,
            args.data_root,
            args.size,
            output_dir=args.output_dir,
            num_workers=args.num_workers,
            dataset_kwargs=kwargs,
            shard=shard,
        )
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"written={summary['written']} skipped={summary['skipped']} failed={summary['failed']} folder={summary['folder']}"
    )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
