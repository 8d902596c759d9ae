"""transformers' zero-shot-image-classification pipeline gives the scores of `zero_shot_classify`."""

from __future__ import annotations

import numpy as np
from PIL import Image
import torch
from transformers import pipeline


def test_pipeline_matches_direct_call(model, processor):
    model.eval()
    labels = ["edema", "cardiomegaly", "pleural effusion"]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)) for _ in range(2)]
    classifier = pipeline(
        "zero-shot-image-classification",
        model=model,
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
    )
    results = classifier(images, candidate_labels=labels, hypothesis_template=model.config.prompt_template)
    pixels = processor(images=images)["pixel_values"]
    direct = model.zero_shot_classify(pixels, labels, processor)
    for row, result in enumerate(results):
        scores = {item["label"]: item["score"] for item in result}
        got = torch.tensor([scores[label] for label in labels])
        torch.testing.assert_close(got, direct[row], atol=1e-5, rtol=1e-5)
