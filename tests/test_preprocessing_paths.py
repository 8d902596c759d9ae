"""One preprocessing everywhere: training-eval transform, evaluation loader, saved/reloaded processor and the
zero-shot pipeline give identical tensors for the same mammogram (16-bit PNG and 12-bit MONOCHROME1 DICOM),
Otsu breast crop included."""

from __future__ import annotations

from datasets import Dataset
import numpy as np
from PIL import Image
import torch

from cleft_hf import CLEFTImageProcessor, CLEFTProcessor
from cleft_hf.data import make_eval_transform, make_loader, read_dicom
from cleft_hf.demo.dicom_writer import write_dicom
from cleft_hf.demo.synthetic_mammo import render_mammogram


def _mammogram_files(tmp_path) -> tuple[str, str]:
    image = render_mammogram(
        np.random.default_rng(0),
        3,
        "M",
        {"massshape": "X", "massmargin": "S", "massdens": "+"},
        laterality="R",
        view="MLO",
        height=160,
        width=128,
    )
    png, dcm = tmp_path / "mammogram.png", tmp_path / "mammogram.dcm"
    Image.fromarray((image * 65535).astype(np.uint16)).save(png)
    write_dicom(
        dcm,
        ((1.0 - image) * 4095).astype(np.uint16),
        bits_stored=12,
        photometric="MONOCHROME1",
        window=(2047.5, 4096),
        modality="MG",
    )
    return str(png), str(dcm)


def test_every_path_gives_identical_tensors(tmp_path, model, tokenizer):
    png, dcm = _mammogram_files(tmp_path)
    assert Image.open(png).mode == "I;16"
    CLEFTProcessor(CLEFTImageProcessor(size=40, crop_size=40, do_otsu_crop=True), tokenizer).save_pretrained(
        tmp_path / "p"
    )
    processor = CLEFTProcessor.from_pretrained(tmp_path / "p")
    assert processor.image_processor.do_otsu_crop  # travels in preprocessor_config.json
    rows = {"image": [png, dcm], "text": ["a mammogram", "a mammogram"]}
    training_eval = torch.stack(make_eval_transform(processor.image_processor)(rows)["pixel_values"])
    loader = make_loader(Dataset.from_dict(rows), processor, shuffle=False, batch_size=2, num_workers=0, seed=0)
    evaluation = next(iter(loader))["pixel_values"]
    direct = processor(images=[Image.open(png), read_dicom(dcm)])["pixel_values"]
    classifier = model.zero_shot_pipeline(processor)
    piped = torch.cat(
        [classifier.preprocess(image, candidate_labels=["mass"])["pixel_values"] for image in (png, read_dicom(dcm))]
    )
    for name, tensor in (("evaluation", evaluation), ("processor", direct), ("pipeline", piped)):
        assert torch.equal(tensor, training_eval), name
    uncropped = CLEFTImageProcessor(size=40, crop_size=40)(read_dicom(dcm))["pixel_values"]
    assert not torch.equal(uncropped[0], training_eval[1])  # the Otsu crop is part of it
    torch.testing.assert_close(training_eval[0], training_eval[1], atol=0.02, rtol=0)  # PNG and DICOM agree
