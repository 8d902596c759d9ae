"""DICOM reading: VOI (window, VOI LUT), rescale, MONOCHROME1, bit depths, compressed syntaxes, bad files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGBaseline8Bit, RLELossless
import pytest

from cleft_hf.data.dicom import is_dicom, read_dicom, read_dicom_header
from cleft_hf.demo.dicom_writer import write_dicom

RAMP = (np.arange(32 * 48).reshape(32, 48) * 2).astype(np.uint16)  # 12-bit values 0..3070


def test_window_maps_linearly_to_unit_range(tmp_path):
    path = tmp_path / "window.dcm"
    write_dicom(path, RAMP, bits_stored=12, window=(2048, 1024))
    image = read_dicom(path)
    assert image.dtype == np.float32 and image.shape == RAMP.shape
    expected = np.clip((RAMP - (2048 - 0.5)) / 1023 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_monochrome1_is_inverted(tmp_path):
    write_dicom(tmp_path / "m2.dcm", RAMP, bits_stored=12, window=(2047.5, 4096))
    write_dicom(tmp_path / "m1.dcm", RAMP, bits_stored=12, window=(2047.5, 4096), photometric="MONOCHROME1")
    np.testing.assert_allclose(read_dicom(tmp_path / "m1.dcm"), 1.0 - read_dicom(tmp_path / "m2.dcm"), atol=1e-6)


def test_16_bit_without_voi_is_min_max_scaled(tmp_path):
    pixels = (np.linspace(1000, 60000, 32 * 32).reshape(32, 32)).astype(np.uint16)
    write_dicom(tmp_path / "sixteen.dcm", pixels, bits_stored=16)
    image = read_dicom(tmp_path / "sixteen.dcm")
    assert image.min() == 0.0 and image.max() == 1.0
    np.testing.assert_allclose(image, (pixels - 1000.0) / 59000.0, atol=1e-5)


def test_rescale_slope_intercept_applied_before_window(tmp_path):
    write_dicom(tmp_path / "rescale.dcm", RAMP, bits_stored=12, rescale=(2.0, -1000.0), window=(3000, 2001))
    modality = RAMP * 2.0 - 1000.0
    expected = np.clip((modality - 2999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(read_dicom(tmp_path / "rescale.dcm"), expected, atol=1e-5)


def test_voi_lut_sequence_preferred_over_window(tmp_path):
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.uint16)
    write_dicom(tmp_path / "lut.dcm", RAMP, bits_stored=12, window=(100, 10), voi_lut=lut)
    np.testing.assert_allclose(read_dicom(tmp_path / "lut.dcm"), lut[RAMP] / 65535.0, atol=1e-5)


def test_explicit_window_and_voi_none(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP, bits_stored=12, window=(100, 10))
    by_hand = read_dicom(tmp_path / "a.dcm", window=(2047.5, 4096))
    np.testing.assert_allclose(by_hand, np.clip((RAMP - 2047.0) / 4095 + 0.5, 0, 1), atol=1e-5)
    no_voi = read_dicom(tmp_path / "a.dcm", voi="none")
    np.testing.assert_allclose(no_voi, RAMP / float(RAMP.max()), atol=1e-5)


def test_8_bit_and_signed_pixels(tmp_path):
    write_dicom(tmp_path / "u8.dcm", (RAMP // 16).astype(np.uint8))
    assert read_dicom(tmp_path / "u8.dcm").max() == 1.0
    signed = (RAMP.astype(np.int32) - 2048).astype(np.int16)
    write_dicom(tmp_path / "s16.dcm", signed, bits_stored=16, window=(0, 4096))
    image = read_dicom(tmp_path / "s16.dcm")
    assert image[0, 0] < 0.01 and abs(float(image[signed == 0][0]) - 0.5) < 1e-3


def test_rle_compressed_file_is_decoded(tmp_path):
    path = tmp_path / "rle.dcm"
    write_dicom(path, RAMP, bits_stored=16)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_allclose(read_dicom(path), (RAMP - RAMP.min()) / (RAMP.max() - RAMP.min()), atol=1e-6)


def test_jpeg_baseline_compressed_file_is_decoded(tmp_path):
    grey = (RAMP // 16).astype(np.uint8)
    path = tmp_path / "jpeg.dcm"
    write_dicom(path, grey)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=95)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    image = read_dicom(path)
    expected = (grey - float(grey.min())) / (float(grey.max()) - float(grey.min()))  # no VOI: min-max
    assert np.abs(image - expected).mean() < 0.02


def test_compressed_syntax_without_plugin_names_the_syntax(tmp_path):
    path = tmp_path / "htj2k.dcm"
    write_dicom(path, RAMP, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.201")  # HTJ2K lossless: no decoder installed
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(RuntimeError, match="High-Throughput JPEG 2000") as info:
        read_dicom(path)
    assert str(path) in str(info.value)


def test_no_pixel_data_names_the_file(tmp_path):
    path = tmp_path / "empty.dcm"
    write_dicom(path, RAMP, bits_stored=12)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    for reader in (read_dicom, read_dicom_header):
        with pytest.raises(ValueError, match="no pixel data") as info:
            reader(path)
        assert str(path) in str(info.value)


def test_not_dicom_and_missing_file(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"this is not a dicom file at all")
    with pytest.raises(ValueError, match="junk.dcm"):
        read_dicom(path)
    with pytest.raises(FileNotFoundError, match="missing.dcm"):
        read_dicom(tmp_path / "missing.dcm")


def test_is_dicom_by_suffix_or_marker(tmp_path):
    path = tmp_path / "no_suffix"
    write_dicom(tmp_path / "x.dcm", RAMP, bits_stored=12)
    path.write_bytes((tmp_path / "x.dcm").read_bytes())
    assert is_dicom(path) and is_dicom(tmp_path / "x.dcm")
    (tmp_path / "image.png").write_bytes(b"\x89PNG" + bytes(200))
    assert not is_dicom(tmp_path / "image.png")
