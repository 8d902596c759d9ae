"""DICOM reading for radiographs and mammograms: pixel data to a float image in [0, 1].

Order of operations (DICOM PS3.3 C.11): stored values -> modality LUT / rescale slope+intercept -> VOI
(explicit ``window``, else the file's VOI LUT sequence, else its window center/width, else min-max over the
image) -> MONOCHROME1 inversion (so that dense tissue is always bright).
"""

from __future__ import annotations

from collections.abc import Sequence
import io
import os
import struct
import zlib

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder

from ..modeling.image_bounds_cleft import check_pixel_budget

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_JPEG2000_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")  # JPEG 2000 lossless / lossy
_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit / explicit VR little endian


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the ``DICM`` marker after the 128-byte preamble (files named
    ``.jpg``/``.jpeg``/``.png`` are not opened)."""
    name = os.fspath(path)
    if name.lower().endswith(DICOM_SUFFIXES):
        return True
    if name.lower().endswith(_IMAGE_SUFFIXES):  # a JPEG or PNG by name: no need to open it twice
        return False
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


def _header_until_pixels(path: str) -> pydicom.Dataset:
    """The elements before the pixel data, read without inflating the whole file: a Deflate file is inflated
    only up to its first 1 MB (pydicom itself inflates all of it, however large the image it claims)."""
    meta = pydicom.filereader.read_file_meta_info(path)
    length = meta.get("FileMetaInformationGroupLength")
    if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian or length is None:
        return pydicom.dcmread(path, stop_before_pixels=True, defer_size="4 KB")
    with open(path, "rb") as handle:
        handle.seek(128 + 4 + 12 + int(length))  # preamble, "DICM", the group-length element, the meta group
        head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(handle.read(1 << 20), 1 << 20)
    return pydicom.filereader.read_dataset(
        DicomBytesIO(head),
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=lambda tag, vr, length: tag.group > 0x0028,
    )


def check_dicom_pixel_budget(path: str | os.PathLike) -> None:
    """Refuse (one line naming the file) a DICOM whose rows x columns x frames exceed the pixel budget
    (`cleft_hf.modeling.image_bounds_cleft`), from the header alone, before any pixel is decoded."""
    path = os.fspath(path)
    try:
        header = _header_until_pixels(path)
    except (InvalidDicomError, EOFError, struct.error, ValueError, KeyError, zlib.error) as err:
        raise ValueError(f"not a readable DICOM file: {path} ({type(err).__name__}: {err})") from err
    frames = header.get("NumberOfFrames", 1)
    check_pixel_budget(
        int(header.get("Rows", 0) or 0),
        int(header.get("Columns", 0) or 0),
        int(frames or 1) if str(frames).strip().isdigit() else 1,
        source=path,
    )


def read_dicom_header(path: str | os.PathLike) -> pydicom.Dataset:
    """Parse the header (large values deferred); ValueError when the file has no pixel data or claims more
    pixels than the pixel budget."""
    path = os.fspath(path)
    check_dicom_pixel_budget(path)
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
        raise RuntimeError(
            f"cannot decode {path}: transfer syntax '{syntax.name}' ({syntax}) is not supported"
        ) from err
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


def reduction_factor(height: int, width: int, min_size: int | None) -> int:
    """Largest integer factor that keeps the shorter side >= ``min_size`` (1 when ``min_size`` is None)."""
    return max(1, min(height, width) // min_size) if min_size else 1


def _box_reduce(stored: np.ndarray, factor: int) -> np.ndarray:
    """Integer-factor box-filter downscale of a (H, W) integer image (PIL's C ``reduce`` on 32-bit integers)."""
    if factor < 2:
        return stored
    from PIL import Image

    if stored.dtype in (np.uint8, np.uint16):  # I;16 / L -> 32-bit "I" is PIL's fast path (Image.new is slow)
        image = Image.fromarray(stored).convert("I")
    else:
        image = Image.fromarray(stored.astype(np.int32))
    return np.asarray(image.reduce(factor))


def _jpeg2000_reduced(ds: pydicom.Dataset, factor: int) -> tuple[np.ndarray, int] | None:
    """(stored values decoded at 1/2**k size, remaining factor) for a single-frame grey unsigned JPEG 2000 file:
    the codestream's wavelet levels give the reduced resolutions directly (Pillow's openjpeg ``reduce``); None
    where that does not apply or fails (the caller decodes at full size)."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    level = int(np.log2(factor)) if factor > 1 else 0
    if (
        syntax not in _JPEG2000_SYNTAXES
        or level == 0
        or int(ds.get("SamplesPerPixel", 1)) != 1
        or int(ds.get("PixelRepresentation", 0)) != 0
        or int(ds.get("NumberOfFrames", 1) or 1) != 1
    ):
        return None
    from PIL import Image
    from pydicom.encaps import generate_frames

    try:
        codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
        with Image.open(io.BytesIO(codestream)) as image:
            image.reduce = min(level, 5)  # 5: openjpeg's default number of decomposition levels
            image.load()
            stored = np.asarray(image)
    except Exception:  # e.g. fewer resolution levels in the codestream: decode at full size instead
        return None
    return stored, factor // 2 ** min(level, 5)


def _native_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """Stored values of a single-frame grey unsigned uncompressed little-endian file as a read-only view of the
    pixel bytes (no copy, unlike ``pixel_array``); None where that does not apply."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits, stored_bits = int(ds.get("BitsAllocated", 0)), int(ds.get("BitsStored", 0) or 0)
    if (
        syntax not in _NATIVE_LITTLE_ENDIAN
        or bits not in (8, 16)
        or int(ds.get("PixelRepresentation", 0)) != 0
        or int(ds.get("SamplesPerPixel", 1)) != 1
        or int(ds.get("NumberOfFrames", 1) or 1) != 1
        or "PixelData" not in ds
    ):
        return None
    rows, columns = int(ds.Rows), int(ds.Columns)
    data = ds.PixelData
    if len(data) < rows * columns * bits // 8:
        return None
    pixels = np.frombuffer(data, dtype=np.uint8 if bits == 8 else "<u2", count=rows * columns).reshape(rows, columns)
    if 0 < stored_bits < bits and int(pixels.max()) >> stored_bits:  # garbage in the unused high bits
        pixels = pixels & ((1 << stored_bits) - 1)
    return pixels


def read_dicom(
    path: str | os.PathLike,
    *,
    window: tuple[float, float] | None = None,
    voi: str = "auto",
    min_size: int | None = None,
) -> np.ndarray:
    """Read a DICOM image as float32 (H, W) in [0, 1], dense = bright.

    Args:
        path: the ``.dcm`` file.
        window: (center, width) in modality units overriding the file's VOI.
        voi: "auto" (file VOI LUT, else its window, else min-max) or "none" (min-max only).
        min_size: read at reduced size: the stored values are downscaled by the largest integer factor that keeps
            the shorter side >= ``min_size`` (box filter, before the modality LUT and VOI). JPEG 2000 files are
            decoded directly at 1/2, 1/4, 1/8 ... size, which saves most of the decoding time.
    Raises:
        FileNotFoundError: missing file. ValueError: not DICOM / corrupt / no pixel data / more pixels than the
            pixel budget (rows x columns x frames, `CLEFT_MAX_IMAGE_PIXELS`; checked from the header first).
        RuntimeError: compressed transfer syntax without an installed decoder (names the syntax).
    """
    path = os.fspath(path)
    if voi not in ("auto", "none"):
        raise ValueError(f"voi must be 'auto' or 'none', got {voi!r}")
    check_dicom_pixel_budget(path)  # before anything is inflated or decoded
    ds = _open(path)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ValueError(f"DICOM file has no pixel data: {path}")
    _check_decodable(ds, path)
    factor = reduction_factor(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), min_size)
    reduced = _jpeg2000_reduced(ds, factor)
    native = _native_pixels(ds) if factor > 1 and reduced is None else None
    if reduced is not None:
        stored, factor = reduced
    elif native is not None:
        stored = native
    else:
        try:
            stored = ds.pixel_array
        except Exception as err:  # decoder errors come in many types; name the file
            raise ValueError(f"cannot decode pixel data of {path}: {type(err).__name__}: {err}") from err
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            stored = stored[0]
        if stored.ndim == 3:  # colour (H, W, 3): radiographs are grey
            stored = stored.mean(axis=-1)
    stored = _box_reduce(stored, factor) if np.issubdtype(stored.dtype, np.integer) else stored
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    if not np.isfinite(values).all():  # float pixel data or a rescale overflow: every score would be NaN
        raise ValueError(f"DICOM file {path} has {int((~np.isfinite(values)).sum())} NaN/infinite pixel values")

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
