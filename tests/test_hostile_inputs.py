"""Hostile or broken input files end in one line naming the file, before memory is spent: images over the pixel
budget (from their headers), NaN pixels, model folders whose weights do not cover the model, and smaller cases."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zlib

import numpy as np
import pandas as pd
from PIL import Image
import pydicom
import pytest
from safetensors.torch import load_file, save_file
import torch

from cleft_hf import CLEFTImageProcessor, CLEFTModel
from cleft_hf.data import read_dicom
from cleft_hf.data._tables import check_values
from cleft_hf.data.transforms import ImageDecodeError, make_eval_transform
from cleft_hf.demo.dicom_writer import write_dicom
from cleft_hf.modeling import image_processing_cleft
from cleft_hf.modeling.image_bounds_cleft import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, ImageTooLargeError


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR claims `width` x `height` grey pixels, with a small valid IDAT (a decompression bomb's
    header: opening it costs nothing, decoding it would allocate the claimed size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------------------ pixel budget
def test_png_over_the_pixel_budget_is_refused_from_its_header(tmp_path, model, processor):
    path = tmp_path / "bomb.png"
    _png_header_only(path, 13000, 13000)  # under Pillow's bomb limit (179 M), over the 67 M budget
    classifier = model.eval().zero_shot_pipeline(processor)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png claims 13000 x 13000 pixels.*pixel budget"):
        classifier(str(path), candidate_labels=["edema", "normal"])
    with pytest.raises(ImageDecodeError, match=r"bomb\.png claims 13000 x 13000"):  # the data loaders too
        make_eval_transform(processor.image_processor).image(str(path))


def test_dicom_over_the_pixel_budget_is_refused_before_inflating(tmp_path, monkeypatch):
    pixels = np.zeros((2000, 2000), dtype=np.uint8)
    path = tmp_path / "deflate.dcm"
    write_dicom(path, pixels)
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    dataset.save_as(path)
    assert path.stat().st_size < 100_000 and read_dicom(path).shape == (2000, 2000)  # within the budget: read
    monkeypatch.setenv(MAX_PIXELS_ENV, str(1000 * 1000))
    with pytest.raises(ValueError, match=r"deflate\.dcm claims 2000 x 2000 pixels.*CLEFT_MAX_IMAGE_PIXELS"):
        read_dicom(path)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    dataset.Rows = dataset.Columns = 60000  # a small file claiming 3.6 G pixels (the header alone is read)
    dataset.NumberOfFrames = 1
    dataset.save_as(path)
    with pytest.raises(ValueError, match=r"claims 60000 x 60000 pixels \(3600 M\), over the pixel budget of 67 M"):
        read_dicom(path)
    assert DEFAULT_MAX_IMAGE_PIXELS == 8192 * 8192


def test_large_images_are_reduced_before_float_with_the_same_result(monkeypatch):
    image_processor = CLEFTImageProcessor(size=64, crop_size=64)
    generator = np.random.default_rng(0)
    eight = generator.integers(0, 256, (1100, 900), dtype=np.uint8)
    sixteen = generator.integers(100, 4000, (1100, 900), dtype=np.uint16)
    monkeypatch.setattr(image_processing_cleft, "LARGE_IMAGE_PIXELS", 10**12)  # the full-float path
    full = [image_processor.preprocess_one(a) for a in (eight, sixteen)]
    monkeypatch.setattr(image_processing_cleft, "LARGE_IMAGE_PIXELS", 1000)  # reduced before float
    calls = []
    original = image_processing_cleft.box_reduce_to_float
    monkeypatch.setattr(image_processing_cleft, "box_reduce_to_float", lambda *a: calls.append(1) or original(*a))
    reduced = [image_processor.preprocess_one(a) for a in (eight, sixteen)]
    assert len(calls) == 2
    for before, after in zip(full, reduced):
        torch.testing.assert_close(after, before, atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ NaN pixels
def test_non_finite_pixels_are_an_error_naming_the_image(tmp_path, model, processor):
    image = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN/infinite pixel values"):
        model.eval().zero_shot_pipeline(processor)(image, candidate_labels=["edema", "normal"])
    mammography = CLEFTImageProcessor(size=32, crop_size=32, do_otsu_crop=True)
    image[5, 6] = np.inf
    with pytest.raises(ValueError, match="2 NaN/infinite pixel values"):  # not torch's bincount error
        mammography.preprocess_one(image)
    path = tmp_path / "nan.tiff"
    Image.fromarray(image).save(path)
    with pytest.raises(ImageDecodeError, match=r"nan\.tiff.*NaN/infinite"):
        make_eval_transform(mammography).image(str(path))


def test_the_pipeline_opens_dicom_paths_like_training(tmp_path, model, processor):
    pixels = np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 2
    path = tmp_path / "study.dcm"
    write_dicom(path, pixels, bits_stored=12)
    classifier = model.eval().zero_shot_pipeline(processor)
    scores = classifier(str(path), candidate_labels=["edema", "normal"])
    expected = classifier(read_dicom(path), candidate_labels=["edema", "normal"])
    assert [s["label"] for s in scores] == [s["label"] for s in expected]
    assert [s["score"] for s in scores] == pytest.approx([s["score"] for s in expected], abs=1e-6)


# ------------------------------------------------------------------------------------------------ model folders
@pytest.fixture
def saved_model(model, tmp_path):
    model.save_pretrained(tmp_path / "full")
    return tmp_path / "full"


def _copy(folder, name):
    target = folder.parent / name
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("family", ["gpt2"])
def test_weights_not_covering_the_model_are_an_error_naming_them(saved_model, caplog):
    missing = _copy(saved_model, "missing")
    weights = load_file(missing / "model.safetensors")
    del weights["visual_projection.weight"], weights["logit_scale"]
    save_file(weights, missing / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing.*2 weights missing: logit_scale, visual_projection\.weight"):
        CLEFTModel.from_pretrained(missing)
    with caplog.at_level(logging.WARNING):
        CLEFTModel.from_pretrained(missing, allow_partial_weights=True)
    assert "loaded anyway: allow_partial_weights" in caplog.text

    fewer_layers = _copy(saved_model, "fewer_layers")
    config = json.loads((fewer_layers / "config.json").read_text())
    config["text_config"]["n_layer"] = 1
    (fewer_layers / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model\.safetensors.*weights not in the model \(dropped\): text_model"):
        CLEFTModel.from_pretrained(fewer_layers)

    projection = _copy(saved_model, "projection")
    config = json.loads((projection / "config.json").read_text())
    config["projection_dim"] *= 2
    (projection / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weights of another shape: text_projection\.weight \(32, 64\) in the file"):
        CLEFTModel.from_pretrained(projection)


@pytest.mark.parametrize("family", ["gpt2"])
def test_truncated_weights_are_one_line_naming_the_file(saved_model):
    truncated = _copy(saved_model, "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"truncated \(model\.safetensors\).*truncated or corrupt") as raised:
        CLEFTModel.from_pretrained(truncated)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("family", ["gpt2"])
def test_adapter_only_folders_still_load_without_the_base_llm_weights(make_model, saved_llm, tmp_path):
    model = make_model(text_model_name_or_path=str(saved_llm))
    model.save_pretrained(tmp_path / "adapter", save_base_model=False)
    loaded = CLEFTModel.from_pretrained(tmp_path / "adapter")  # the base LLM's keys are not "missing"
    base = set(model.base_llm_state_keys())
    trained = {name: tensor for name, tensor in model.state_dict().items() if name not in base}
    assert trained and all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in trained.items())


# ------------------------------------------------------------------------------------------------ smaller cases
def test_offending_table_values_are_the_offending_ones():
    column = pd.Series(["1", "2", "3", "4", "5", "dense", "2"])
    with pytest.raises(ValueError, match=r"values outside \[1, 2, 3, 4, 5\]: \['dense'\]$"):
        check_values(column, (1, 2, 3, 4, 5), "tissueden", "clinical.csv")


def test_invalid_utf8_in_a_report_is_warned(tmp_path, caplog):
    from cleft_hf.data.mimic_cxr import _read_report

    path = tmp_path / "s1.txt"
    path.write_bytes(b"FINDINGS: clear \xff\xfe lungs.")
    with caplog.at_level(logging.WARNING):
        assert _read_report(str(path)) == "FINDINGS: clear \ufffd\ufffd lungs."
    assert "s1.txt is not valid UTF-8" in caplog.text and "2 characters replaced" in caplog.text


def test_peft_config_that_is_not_a_mapping_names_the_field(tmp_path):
    from cleft_hf.arguments import ConfigError, load_arguments
    from cleft_hf.training.config import PretrainArguments

    with pytest.raises(ConfigError, match=r"model_config.*peft_config must be a mapping.*got 'lora'"):
        load_arguments(
            PretrainArguments, overrides={"data_root": str(tmp_path), "model_config": {"peft_config": "lora"}}
        )
