"""Data pipeline throughput: decode + preprocess (img/s per core) for 512-px PNG / JPEG / DICOM files through a
torch DataLoader with 0 and 2 workers, and the synthetic demo generator's speed.

Goals: >= 300 img/s/core for 512-px PNG, >= 100 img/s/core for DICOM, >= 200 img/s for demo generation (1 core).
Files are generated in a temporary folder first. Usage: ``python benchmarks/bench_data.py [--images 96]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from datasets import Dataset, Features, Image as ImageFeature, Value
from PIL import Image

from cleft_hf.data import make_eval_transform, make_train_transform
from cleft_hf.demo.dicom_writer import write_dicom
from cleft_hf.data.transforms import with_image_transform
from cleft_hf.demo.synthetic import write_demo_mimic_cxr
from cleft_hf.demo.synthetic_cxr import CXR_FINDINGS, ChestXRayRenderer, sample_case
from cleft_hf.modeling.image_processing_cleft import CLEFTImageProcessor

GOALS = {"png": 300.0, "jpeg": 300.0, "dicom": 100.0}


def make_files(folder: Path, count: int, size: int) -> dict[str, list[str]]:
    """``count`` distinct synthetic radiographs of ``size`` px, saved as 8-bit PNG, JPEG (q 90) and 12-bit DICOM."""
    renderer = ChestXRayRenderer(size)
    paths: dict[str, list[str]] = {"png": [], "jpeg": [], "dicom": []}
    for index in range(count):
        rng = np.random.default_rng([0, index])
        pixels = renderer.render(sample_case(rng, CXR_FINDINGS[index % 5]), rng)
        png, jpeg, dicom = folder / f"{index}.png", folder / f"{index}.jpg", folder / f"{index}.dcm"
        Image.fromarray(pixels).save(png)
        Image.fromarray(pixels).save(jpeg, quality=90)
        write_dicom(dicom, pixels.astype(np.uint16) * 16, bits_stored=12, window=(2047.5, 4096))
        paths["png"].append(str(png))
        paths["jpeg"].append(str(jpeg))
        paths["dicom"].append(str(dicom))
    return paths


def _collate(rows: list[dict]) -> torch.Tensor:
    return torch.stack([row["pixel_values"] for row in rows])


def throughput(paths: list[str], kind: str, transform, workers: int, repeats: int) -> float:
    """Images per second through ``Dataset.set_transform`` + DataLoader (first batch of each worker excluded)."""
    feature = Value("string") if kind == "dicom" else ImageFeature()
    dataset = Dataset.from_dict({"image": paths * repeats}, features=Features({"image": feature}))
    dataset = with_image_transform(dataset, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=_collate)
    iterator = iter(loader)
    for _ in range(max(1, workers)):  # start-up (worker launch, first decode) is not throughput
        next(iterator)
    start, seen = time.perf_counter(), 0
    for batch in iterator:
        seen += len(batch)
    return seen / (time.perf_counter() - start)


def generation_speed(folder: Path, studies: int, size: int) -> float:
    start = time.perf_counter()
    summary = write_demo_mimic_cxr(folder, studies, image_size=size, seed=0)
    return summary["images"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="distinct files per format")
    parser.add_argument("--repeats", type=int, default=4, help="passes over the files per measurement")
    parser.add_argument("--size", type=int, default=512, help="stored image size in pixels")
    parser.add_argument("--demo-studies", type=int, default=400, help="studies for the generator speed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    processor = CLEFTImageProcessor(size=224, crop_size=224)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), args.images, args.size)
        for name, transform in (("eval", make_eval_transform(processor)), ("train", make_train_transform(processor, seed=0))):
            for kind in ("png", "jpeg", "dicom"):
                for workers in (0, 2):
                    rate = throughput(paths[kind], kind, transform, workers, args.repeats)
                    per_core = rate / max(1, workers)
                    rows.append((kind, name, workers, rate, per_core, per_core / GOALS[kind]))
        demo_size = 128
        generated = generation_speed(Path(tmp) / "demo", args.demo_studies, demo_size)
    print(f"decode + preprocess, {args.size}-px files -> 224-px tensors, batch 32 (per core = rate / max(1, workers))")
    print(f"{'format':<7}{'transform':<10}{'workers':>8}{'img/s':>10}{'img/s/core':>12}{'x goal':>8}")
    for kind, name, workers, rate, per_core, ratio in rows:
        print(f"{kind:<7}{name:<10}{workers:>8}{rate:>10.0f}{per_core:>12.0f}{ratio:>8.2f}")
    print(f"demo generator (MIMIC-CXR-like tree, {demo_size} px, 1 core): {generated:.0f} img/s, x goal {generated / 200:.2f}")


if __name__ == "__main__":
    main()
