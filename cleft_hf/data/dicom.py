"""DICOM reading for radiographs and mammograms: pixel data to a float image in [0, 1].

Order of operations (DICOM PS3.3 C.11): stored values -> modality LUT / rescale slope+intercept -> VOI
(explicit ``window``, else the file's VOI LUT sequence, else its window center/width, else min-max over the
image) -> MONOCHROME1 inversion (so that dense tissue is always bright).
"""

from __future__ import annotations

import os
import struct
from typing import Sequence

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the ``DICM`` marker after the 128-byte preamble."""
    name = os.fspath(path)
    if name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(name, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _open(path: str, **kwargs) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError as err:
        raise ValueError(f"not a readable DICOM file: {path} ({err})") from err
    except (EOFError, struct.error, ValueError, KeyError) as err:
        raise ValueError(f"corrupt DICOM file: {path} ({type(err).__name__}: {err})") from err


def read_dicom_header(path: str | os.PathLike) -> pydicom.Dataset:
    """Parse the header (large values deferred); ValueError when the file has no pixel data."""
    path = os.fspath(path)
    ds = _open(path, defer_size="4 KB")
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ValueError(f"DICOM file has no pixel data: {path}")
    return ds


def _check_decodable(ds: pydicom.Dataset, path: str) -> None:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as err:
        raise RuntimeError(f"cannot decode {path}: transfer syntax '{syntax.name}' ({syntax}) is not supported") from err
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a pixel-data plugin"
        raise RuntimeError(
            f"cannot decode {path}: transfer syntax '{syntax.name}' ({syntax}) needs a plugin that is not installed ({needs})"
        )


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM VOI LUT function (LINEAR, LINEAR_EXACT, SIGMOID) mapped to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"window width must be >= 1 for LINEAR windowing, got {width}")
    if width == 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value) -> float:
    return float(value[0]) if isinstance(value, (Sequence, pydicom.multival.MultiValue)) else float(value)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def read_dicom(
    path: str | os.PathLike, *, window: tuple[float, float] | None = None, voi: str = "auto"
) -> np.ndarray:
    """Read a DICOM image as float32 (H, W) in [0, 1], dense = bright.

    Args:
        path: the ``.dcm`` file.
        window: (center, width) in modality units overriding the file's VOI.
        voi: "auto" (file VOI LUT, else its window, else min-max) or "none" (min-max only).
    Raises:
        FileNotFoundError: missing file. ValueError: not DICOM / corrupt / no pixel data.
        RuntimeError: compressed transfer syntax without an installed decoder (names the syntax).
    """
    path = os.fspath(path)
    if voi not in ("auto", "none"):
        raise ValueError(f"voi must be 'auto' or 'none', got {voi!r}")
    ds = _open(path)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ValueError(f"DICOM file has no pixel data: {path}")
    _check_decodable(ds, path)
    try:
        stored = ds.pixel_array
    except Exception as err:  # decoder errors come in many types; name the file
        raise ValueError(f"cannot decode pixel data of {path}: {type(err).__name__}: {err}") from err
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        stored = stored[0]
    if stored.ndim == 3:  # colour (H, W, 3): radiographs are grey
        stored = stored.mean(axis=-1)
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)

    if window is not None:
        image = _window(values, float(window[0]), float(window[1]), "LINEAR")
    elif voi == "auto" and "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        lut_input = np.rint(values).astype(np.int64)  # VOI LUTs index integer modality values
        image = np.clip(apply_voi(lut_input, ds).astype(np.float32) / (2**bits - 1), 0.0, 1.0)
    elif voi == "auto" and "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        image = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    else:
        image = _min_max(values)

    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        image = 1.0 - image
    return np.ascontiguousarray(image, dtype=np.float32)
