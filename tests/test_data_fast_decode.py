"""The training data path at reduced size: JPEG draft decoding, DICOM read at the needed resolution (uncompressed
and JPEG 2000), the resized copy of `python -m cleft_hf.data.preprocess` read transparently by the loaders, the
DataLoader of the scripts decoding files itself, and decode errors that name the file."""

from __future__ import annotations

from datasets import concatenate_datasets
import numpy as np
from PIL import Image
import pytest
import torch

from cleft_hf import CLEFTImageProcessor
from cleft_hf.data import load_embed, load_mimic_cxr, make_eval_transform, read_dicom
from cleft_hf.data.dicom import reduction_factor
from cleft_hf.data.load_cache import image_paths
from cleft_hf.data.preprocess import main as preprocess_main
from cleft_hf.data.preprocess import preprocess
from cleft_hf.data.transforms import load_image
from cleft_hf.demo.dicom_writer import write_dicom
from cleft_hf.demo.synthetic import write_demo_embed, write_demo_mimic_cxr


def _radiograph(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((np.sin(x / 23.0) + np.cos(y / 31.0) + 2.0) * 900.0).astype(np.uint16)  # smooth, 12-bit values


def _box(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    return image[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


@pytest.mark.parametrize("jpeg2000", [False, True])
def test_dicom_read_at_reduced_size_matches_full_read(tmp_path, jpeg2000):
    pixels = _radiograph(416, 320)
    path = tmp_path / "m.dcm"
    write_dicom(path, pixels, bits_stored=12, window=(1800, 3600), photometric="MONOCHROME1", jpeg2000=jpeg2000)
    full = read_dicom(path)
    assert np.array_equal(np.rint(full * 1e4), np.rint(read_dicom(path, min_size=None) * 1e4))
    reduced = read_dicom(path, min_size=80)
    factor = reduction_factor(416, 320, 80)
    assert factor == 4 and reduced.shape == (104, 80)
    # box filter before VOI ~ after VOI on smooth images; JPEG 2000 gives its wavelet low-pass band (shifted by
    # a fraction of a pixel against the box filter)
    difference = np.abs(reduced - _box(full, factor))
    assert difference.mean() < (0.02 if jpeg2000 else 0.005) and difference.max() < (0.05 if jpeg2000 else 0.02)
    assert np.corrcoef(reduced.ravel(), _box(full, factor).ravel())[0, 1] > 0.99
    assert reduced.mean() > 0.05 and reduced.std() > 0.05


def test_jpeg_decoded_in_draft_mode_keeps_the_shorter_side(tmp_path):
    Image.fromarray((_radiograph(600, 500) // 16).astype(np.uint8)).save(tmp_path / "a.jpg", quality=90)
    image = load_image(str(tmp_path / "a.jpg"), target=100)
    assert min(image.size) >= 100 and image.size[0] <= 250  # decoded at 1/2 or 1/4, then reduced
    assert load_image(str(tmp_path / "a.jpg")).size == (500, 600)


def test_decode_errors_name_the_file(tmp_path):
    for name in ("broken.jpg", "broken.png", "broken.dcm"):
        (tmp_path / name).write_bytes(b"\x89PNG not really" if name.endswith(".png") else b"garbage")
        with pytest.raises(ValueError, match=name):
            load_image(str(tmp_path / name), target=32)
    with pytest.raises(FileNotFoundError):
        load_image(str(tmp_path / "missing.jpg"), target=32)


def test_preprocessed_embed_pngs_are_read_transparently(tmp_path):
    write_demo_embed(tmp_path, 16, image_size=96, seed=5)
    originals = concatenate_datasets(list(load_embed(tmp_path, resized=None).values()))
    summary = preprocess("embed", tmp_path, 48, num_workers=1, progress=False)
    assert summary["written"] == len(set(originals["image"])) and summary["failed"] == 0
    resized = concatenate_datasets(list(load_embed(tmp_path).values()))  # resized="auto" finds the copy
    assert all(p.endswith(".dcm.png") and "cleft_resized_48px" in p for p in resized["image"])
    assert resized["text"] == originals["text"]
    transform = make_eval_transform(CLEFTImageProcessor(size=32, crop_size=32))
    for original, copy in zip(originals["image"][:4], resized["image"][:4]):
        png = Image.open(copy)
        assert png.mode == "I;16" and min(png.size) == 48
        a = transform({"image": [original]})["pixel_values"][0]
        b = transform({"image": [copy]})["pixel_values"][0]
        # same image resized by other filters (sharp skin line at 32 px): close on average, same structure
        assert (a - b).abs().mean() < 0.1 and torch.corrcoef(torch.stack([a.ravel(), b.ravel()]))[0, 1] > 0.95
    assert preprocess("embed", tmp_path, 48, num_workers=1, progress=False)["skipped"] == summary["written"]
    assert len(load_embed(tmp_path, resized=None)["train"]) == len(load_embed(tmp_path, resized=48)["train"])
    with pytest.raises(FileNotFoundError, match="cleft_resized_64px"):
        load_embed(tmp_path, resized=64)


def test_preprocess_cli_on_jpegs_with_workers(tmp_path, capsys):
    write_demo_mimic_cxr(tmp_path, 12, image_size=64, seed=2, n_test_per_class=1, empty_report_rate=0.0)
    assert (
        preprocess_main(["--dataset", "mimic_cxr", "--data_root", str(tmp_path), "--size", "40", "--num_workers", "2"])
        == 0
    )
    assert "written=" in capsys.readouterr().out
    data = load_mimic_cxr(tmp_path)
    assert all(p.endswith(".jpg.png") for p in image_paths(data))
    assert min(data["train"][0]["image"].size) == 40
    assert preprocess_main(["--dataset", "nope", "--data_root", str(tmp_path)]) == 2
