"""The demo's similarity-map figures: one test image of a modality, the maps of its learned prompts' classes."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import get_dataset_spec, get_split
from ..data.transforms import load_image
from ..evaluation.similarity_plots import plot_similarity_maps, processed_image
from ..modeling import CLEFTModel, CLEFTProcessor


def write_similarity_figure(
    model_dir: str | Path,
    dataset: str,
    data_root: str | Path,
    path: str | Path,
    task: str | None = None,
    split: str = "test",
) -> Path:
    """Similarity maps (learned prompts of `task`, every class) of the first `split` image of the demo data,
    drawn over the model input, saved as the PNG `path`."""
    model = CLEFTModel.from_pretrained(model_dir).eval()
    processor = CLEFTProcessor.from_pretrained(model_dir)
    spec = get_dataset_spec(dataset)
    rows = get_split(spec.load(str(data_root), **({"task": task} if task else {})), split)
    row = rows[0]
    pixels = processor.image_processor(images=load_image(row["image"]))["pixel_values"]
    learned_task = task if task in model.prompt_set_names() else None
    maps = model.similarity_maps(pixels, use_learned_prompts=True, task=learned_task)
    probabilities = maps.logits.softmax(-1)[0]
    titles = [f"{name} ({p:.2f})" for name, p in zip(maps.class_names, probabilities.tolist())]
    image = processed_image(pixels[0], processor.image_processor.image_mean, processor.image_processor.image_std)
    with torch.no_grad():
        return plot_similarity_maps(
            image,
            maps.patch_maps[0],
            titles,
            Path(path),
            f"{dataset}{' ' + task if task else ''}, first {split} image: each map sums to its logit",
        )


__all__ = ["write_similarity_figure"]
