"""DICOM writing for the demo data and test fixtures (the library only reads DICOM: `cleft_hf.data.read_dicom`)."""

from __future__ import annotations

import os

import numpy as np


def _jpeg2000_codestream(pixels: np.ndarray, bits_stored: int) -> bytes:
    import io

    from PIL import Image

    if pixels.dtype == np.int16:
        raise ValueError("jpeg2000=True writes unsigned pixels (uint8 / uint16)")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG2000", irreversible=False, no_jp2=True)
    return buffer.getvalue()


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    modality: str = "DX",
    jpeg2000: bool = False,
    **tags,
) -> None:
    """Write a single-frame grey image as an uncompressed (Explicit VR Little Endian) DICOM file, or with
    ``jpeg2000`` as JPEG 2000 lossless (unsigned pixels; encoded by Pillow's openjpeg, encapsulated by pydicom).

    Used for fixtures and the built-in demo data. ``pixels``: (H, W) uint8 / uint16 / int16 stored values;
    ``rescale``: (slope, intercept); ``window``: (center, width); ``voi_lut``: uint16 table over the modality
    values 0..len-1 (16 bits per entry); extra keyword ``tags`` are set as DICOM attributes (e.g. ``PatientID``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"pixels must be a 2-D uint8/uint16/int16 array, got {pixels.dtype} {pixels.shape}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = tags.pop("SOPInstanceUID", None) or generate_uid(entropy_srcs=[os.fspath(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut) % 65536, 0, 16]
        item.add_new(0x00283006, "US", np.asarray(voi_lut, dtype=np.uint16).tolist())  # LUTData
        ds.VOILUTSequence = [item]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if jpeg2000:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([_jpeg2000_codestream(pixels, int(ds.BitsStored))])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(os.fspath(path), enforce_file_format=True)
