"""Checks of a loader's image files (``verify=`` "none" | "exists" | "header" | "decode"), run in parallel threads:
file-system calls and image decoders release the GIL, and a cold file cache makes ``exists`` I/O-bound."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
import os

import numpy as np

VERIFY_MODES = ("none", "exists", "header", "decode")
CHECK_THREADS = 32


def map_parallel(function: Callable[[str], object], paths: Sequence[str], threads: int) -> list:
    """``[function(p) for p in paths]`` over a thread pool, in order, in chunks (cheap per-call overhead)."""
    if len(paths) < 256 or threads <= 1:
        return [function(p) for p in paths]
    chunk = max(64, len(paths) // (threads * 8))
    pieces = [paths[start : start + chunk] for start in range(0, len(paths), chunk)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [result for part in pool.map(lambda part: [function(p) for p in part], pieces) for result in part]


def files_exist(paths: Sequence[str], threads: int = CHECK_THREADS) -> np.ndarray:
    """(N,) bool: which ``paths`` are existing regular files, checked in parallel."""
    return np.fromiter(map_parallel(os.path.isfile, list(paths), threads), dtype=bool, count=len(paths))


def _problem(path: str, check: Callable[[str], object]) -> str | None:
    """None when ``check(path)`` passes, else a one-line reason."""
    try:
        check(path)
    except FileNotFoundError:
        return "file not found"
    except Exception as err:  # any decoder failure means the file is unusable
        return f"{type(err).__name__}: {err}"
    return None


def verify_images(
    paths: Sequence[str],
    mode: str,
    skip_bad: bool,
    report,
    header_reader: Callable[[str], object],
    decoder: Callable[[str], object],
    threads: int = CHECK_THREADS,
) -> np.ndarray:
    """Check the image files; returns a keep mask (N,). The first bad file (in table order) raises naming it, or
    with ``skip_bad`` every bad file is skipped and listed in ``report.bad_images``."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {mode!r}")
    paths = [str(p) for p in paths]
    keep = np.ones(len(paths), dtype=bool)
    if mode == "none" or not paths:
        return keep
    problems: list[str | None] = [None if ok else "file not found" for ok in files_exist(paths, threads)]
    if mode != "exists":
        check = header_reader if mode == "header" else decoder
        present = [i for i, problem in enumerate(problems) if problem is None]
        for index, problem in zip(
            present, map_parallel(lambda p: _problem(p, check), [paths[i] for i in present], threads)
        ):
            problems[index] = problem
    for index, problem in enumerate(problems):
        if problem is None:
            continue
        if not skip_bad:
            raise (FileNotFoundError if problem == "file not found" else ValueError)(
                f"unreadable image {paths[index]}: {problem} (pass skip_bad=True to skip such files)"
            )
        keep[index] = False
        report.bad_images.append(paths[index])
    return keep


def pil_header(path: str) -> None:
    from PIL import Image

    from ..modeling.image_bounds_cleft import check_pixel_budget

    with Image.open(path) as image:
        check_pixel_budget(image.height, image.width, source=path)  # opening parses the header


def pil_decode(path: str) -> None:
    from PIL import Image

    from ..modeling.image_bounds_cleft import check_pixel_budget

    with Image.open(path) as image:
        check_pixel_budget(image.height, image.width, source=path)
        image.load()


def image_header(path: str) -> None:
    """Header check of a DICOM (pydicom) or any other image file (PIL)."""
    from .dicom import is_dicom, read_dicom_header

    read_dicom_header(path) if is_dicom(path) else pil_header(path)


def image_decode(path: str) -> None:
    """Full decode of a DICOM (:func:`~cleft_hf.data.read_dicom`) or any other image file (PIL)."""
    from .dicom import is_dicom, read_dicom

    read_dicom(path) if is_dicom(path) else pil_decode(path)
