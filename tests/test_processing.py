"""CLEFTProcessor / CLEFTImageProcessor: input types, EOS and padding, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
import pytest
import torch

from cleft_hf import CLEFTImageProcessor, CLEFTProcessor
from cleft_hf.modeling.image_processing_cleft import otsu_crop, otsu_threshold


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(np.full((40, 60), 128, np.uint8)),
        Image.fromarray(np.full((40, 60, 3), 128, np.uint8)),
        Image.fromarray(np.full((40, 60, 4), 128, np.uint8), mode="RGBA"),
        np.full((40, 60), 128, np.uint8),
        np.full((40, 60, 3), 128, np.uint8),
        np.full((3, 40, 60), 128, np.uint8),
        torch.full((40, 60), 128, dtype=torch.uint8),
        torch.full((1, 40, 60), 128 / 255),
    ],
    ids=["pil-L", "pil-rgb", "pil-rgba", "np-gray", "np-hwc", "np-chw", "torch-u8", "torch-float"],
)
def test_image_input_types(image):
    pixels = CLEFTImageProcessor(size=32, crop_size=32)(image)["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, torch.full_like(pixels, (128 / 255 - 0.5) / 0.5), atol=1e-3, rtol=0)


def test_uint16_and_shorter_side_resize_and_centre_crop():
    ramp = np.tile(np.linspace(0, 4095, 80).astype(np.uint16), (40, 1))  # 12-bit data in uint16
    processor = CLEFTImageProcessor(size=20, crop_size=20)
    tensor = processor.to_float_tensor(ramp)
    assert tensor.shape == (1, 40, 80) and tensor.min() == 0 and tensor.max() == 1
    cropped = processor.resize_and_crop(tensor)
    assert cropped.shape == (1, 20, 20)
    assert 0.4 < cropped.mean() < 0.6  # the centre of the ramp
    pixels = processor([ramp, Image.fromarray(ramp)])["pixel_values"]
    torch.testing.assert_close(pixels[0], pixels[1], atol=2e-3, rtol=0)
    assert torch.equal(pixels[0, 0], pixels[0, 2])  # grey replicated


def test_wrong_channel_count_is_a_clear_error():
    processor = CLEFTImageProcessor(size=32, crop_size=32)
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        processor(np.zeros((40, 40, 2), np.uint8))


def test_model_rejects_wrong_channel_count(model):
    with pytest.raises(ValueError, match="pixel_values must be"):
        model.get_image_features(torch.zeros(1, 1, 32, 32))


def test_text_eos_right_padding_truncation(processor):
    tokenizer = processor.tokenizer
    encoded = processor(text=["no edema", "cardiomegaly with a large right pleural effusion"])
    lengths = encoded["attention_mask"].sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert encoded["input_ids"][row, length - 1] == tokenizer.eos_token_id
        assert encoded["attention_mask"][row, :length].all() and not encoded["attention_mask"][row, length:].any()
    truncated = processor(text=" ".join(["edema"] * 100), max_length=10)
    assert truncated["input_ids"].shape == (1, 10) and truncated["input_ids"][0, -1] == tokenizer.eos_token_id
    direct = tokenizer(["no edema"])["input_ids"][0]  # the tokenizer itself appends EOS too (pipelines use it)
    assert direct[-1] == tokenizer.eos_token_id


def test_empty_text_is_a_clear_error(processor, model):
    with pytest.raises(ValueError, match="empty text at position"):
        processor(text=["edema", "  "])
    with pytest.raises(ValueError, match="empty text"):
        model.get_text_features(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def test_processor_save_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = CLEFTProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.image_processor, CLEFTImageProcessor)
    assert loaded.max_length == processor.max_length
    assert loaded.image_processor.crop_size == processor.image_processor.crop_size
    texts = ["no edema", "cardiomegaly"]
    images = [np.random.default_rng(0).integers(0, 255, (50, 40), dtype=np.uint8)]
    a, b = processor(text=texts, images=images), loaded(text=texts, images=images)
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(a[key], b[key]), key
    loaded.save_pretrained(tmp_path / "again")  # loaded offline: transformers records how, the saved folder must not
    saved = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert "local_files_only" not in saved and "is_local" not in saved


def test_otsu_crop_finds_the_bright_region():
    image = torch.full((1, 300, 400), 0.05)
    image[:, 40:160, 100:240] = 0.7
    image[:, 0, 0] = 1.0  # a speck does not widen the box
    assert 0.05 < otsu_threshold(image) < 0.7
    cropped = otsu_crop(image)
    assert cropped.shape == (1, 120, 140) and float(cropped.min()) == pytest.approx(0.7)
    assert otsu_crop(torch.zeros(1, 10, 10)).shape == (1, 10, 10)


def test_otsu_crop_is_a_saved_processor_step(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    image[8:40, 0:32] = 200
    CLEFTImageProcessor(size=32, crop_size=32, do_otsu_crop=True).save_pretrained(tmp_path)
    processor = CLEFTImageProcessor.from_pretrained(tmp_path)
    assert processor.do_otsu_crop and float(processor(image)["pixel_values"].min()) > 0.0  # background cut away
    assert float(CLEFTImageProcessor(size=32, crop_size=32)(image)["pixel_values"].min()) < 0.0


def test_high_bit_depth_scaling():
    image = np.full((8, 8), 1000, np.uint16)
    image[0, 0] = 3000
    per_image = CLEFTImageProcessor().to_float_tensor(image)
    by_max = CLEFTImageProcessor(high_bit_depth_scaling="max_value").to_float_tensor(image)
    assert float(per_image.max()) == 1.0 and float(per_image.min()) == 0.0
    assert float(by_max.max()) == pytest.approx(3000 / 65535)
    with pytest.raises(ValueError, match="high_bit_depth_scaling"):
        CLEFTImageProcessor(high_bit_depth_scaling="log")
