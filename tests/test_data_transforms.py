"""set_transform transforms: decoding (PIL, paths, DICOM), eval/train geometry, determinism, Otsu crop, text augment."""

from __future__ import annotations

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
import numpy as np
from PIL import Image
import pytest
import torch
import torch.nn.functional as F

from cleft_hf import CLEFTImageProcessor
from cleft_hf.data import make_eval_transform, make_train_transform
from cleft_hf.data.affine_warp import affine_grid, crop_rotation_theta
from cleft_hf.data.transforms import augment_text, load_image
from cleft_hf.demo.dicom_writer import write_dicom

REPORT = "The heart is enlarged. There is a small left effusion. No pneumothorax. Lungs are otherwise clear."


@pytest.fixture
def image_processor():
    return CLEFTImageProcessor(size=40, crop_size=32)


@pytest.fixture
def files(tmp_path):
    grey = (np.add.outer(np.arange(48), np.arange(64)) * 2).astype(np.uint8)  # (48, 64) gradient
    Image.fromarray(grey).save(tmp_path / "a.png")
    write_dicom(tmp_path / "a.dcm", grey.astype(np.uint16) * 16, bits_stored=12, window=(2047.5, 4096))
    return {"grey": grey, "png": str(tmp_path / "a.png"), "dcm": str(tmp_path / "a.dcm")}


def _dataset(files, n=4):
    features = Features(
        {"image": ImageFeature(), "text": Value("string"), "labels": Value("int64"), "label_mask": Value("float32")}
    )
    return Dataset.from_dict(
        {"image": [files["png"]] * n, "text": [REPORT] * n, "labels": list(range(n)), "label_mask": [1.0] * n},
        features=features,
    )


def test_eval_transform_matches_image_processor(files, image_processor):
    dataset = _dataset(files)
    dataset.set_transform(make_eval_transform(image_processor))
    row = dataset[0]
    assert set(row) == {"pixel_values", "text", "labels", "label_mask"}
    expected = image_processor(Image.open(files["png"]))["pixel_values"][0]
    torch.testing.assert_close(row["pixel_values"], expected)
    assert row["pixel_values"].shape == (3, 32, 32) and row["text"] == REPORT and row["labels"] == 0


def test_dicom_paths_png_paths_and_arrays_decode_alike(files, image_processor):
    transform = make_eval_transform(image_processor)
    out = transform({"image": [files["dcm"], files["png"], files["grey"]], "labels": [0, 1, 2]})
    assert [p.shape for p in out["pixel_values"]] == [(3, 32, 32)] * 3 and out["labels"] == [0, 1, 2]
    torch.testing.assert_close(out["pixel_values"][0], out["pixel_values"][1], atol=1e-2, rtol=0)  # /4095 vs /255
    torch.testing.assert_close(out["pixel_values"][1], out["pixel_values"][2])
    with pytest.raises(KeyError, match="image"):
        transform({"pixels": [files["png"]]})


def test_train_transform_is_random_but_seeded(files, image_processor):
    dataset = _dataset(files, n=2)
    dataset.set_transform(make_train_transform(image_processor, seed=5))
    first = [dataset[0]["pixel_values"] for _ in range(3)]
    assert first[0].shape == (3, 32, 32) and -1.0 <= float(first[0].min()) and float(first[0].max()) <= 1.0
    assert not torch.equal(first[0], first[1])
    dataset.set_transform(make_train_transform(image_processor, seed=5))
    again = [dataset[0]["pixel_values"] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # with every augmentation off, a square image goes through like the eval transform (up to resampling)
    still = make_train_transform(
        image_processor, scale=(1.0, 1.0), max_rotation=0, max_translate=0, brightness=0, contrast=0
    )
    square = files["grey"][:, 8:56]
    plain = make_eval_transform(CLEFTImageProcessor(size=32, crop_size=32))({"image": [square]})["pixel_values"][0]
    torch.testing.assert_close(still({"image": [square]})["pixel_values"][0], plain, atol=0.03, rtol=0)


def test_hflip_mirrors(image_processor):
    image = np.zeros((32, 32), np.uint8)
    image[:, :8] = 255
    flips = make_train_transform(
        image_processor,
        scale=(1.0, 1.0),
        max_rotation=0,
        max_translate=0,
        brightness=0,
        contrast=0,
        hflip=True,
        seed=0,
    )
    sides = {bool(flips({"image": [image]})["pixel_values"][0][0, :, :4].mean() > 0) for _ in range(12)}
    assert sides == {True, False}


def test_dataloader_workers_draw_different_augmentations(files, image_processor):
    dataset = _dataset(files, n=4)
    dataset.set_transform(make_train_transform(image_processor, seed=1))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2, collate_fn=lambda rows: torch.stack([r["pixel_values"] for r in rows])
    )
    batches = list(loader)
    assert len(batches) == 2 and not torch.equal(batches[0][0], batches[1][0])


def test_text_augmentation():
    rng = np.random.default_rng(0)
    sentences = set(REPORT.split(". "))
    shuffled = [augment_text(REPORT, "shuffle", rng) for _ in range(6)]
    assert any(s != REPORT for s in shuffled)
    assert all(sorted(s.rstrip(".").split(". ")) == sorted(REPORT.rstrip(".").split(". ")) for s in shuffled)
    sampled = [augment_text(REPORT, "sample", rng) for _ in range(10)]
    assert all(s and set(s.rstrip(".").split(". ")) <= {x.rstrip(".") for x in sentences} for s in sampled)
    assert any(len(s) < len(REPORT) for s in sampled)
    assert augment_text("One sentence only.", "shuffle", rng) == "One sentence only."
    with pytest.raises(ValueError, match="text_augment"):
        make_train_transform(CLEFTImageProcessor(), text_augment="reverse")


def test_affine_grid_equals_torch_for_the_crop_rotation_matrix():
    theta = crop_rotation_theta((3, 5, 200, 210), (240, 300), (224, 224), 0.1, (3.0, -2.0), flip=-1.0)
    for height, width in ((224, 224), (30, 17)):
        expected = F.affine_grid(torch.tensor([theta]), [1, 1, height, width], align_corners=False)
        torch.testing.assert_close(affine_grid(theta, height, width), expected, atol=1e-6, rtol=0)


def test_batch_decoded_first_equals_image_by_image(files, image_processor):
    cells = [files["png"], files["grey"], files["dcm"], files["png"]]
    batch = make_train_transform(image_processor, seed=3)({"image": cells})["pixel_values"]
    one_by_one = make_train_transform(image_processor, seed=3)
    for cell, tensor in zip(cells, batch):
        torch.testing.assert_close(tensor, one_by_one.image(cell), atol=0, rtol=0)


def test_large_8bit_images_are_resized_with_antialiasing_on_decode(tmp_path):
    rng = np.random.default_rng(0)
    pixels = (np.add.outer(np.arange(900), np.arange(700)) % 256 / 2 + rng.normal(0, 20, (900, 700))).clip(0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    whole = load_image(str(tmp_path / "a.jpg"), target=None)
    reduced = load_image(str(tmp_path / "a.jpg"), target=100)  # 1/4 draft (175 px), then 175 -> 100 antialiased
    assert reduced.mode == "L" and min(reduced.size) == 100 and reduced.size == (100, 129)
    full = torch.from_numpy(np.asarray(whole, np.float32) / 255)[None, None]
    expected = F.interpolate(full, size=(129, 100), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    difference = (torch.from_numpy(np.asarray(reduced, np.float32) / 255) - expected).abs()
    assert float(difference.mean()) < 0.02  # the 1/4 DCT decode and 8-bit rounding against a full decode
