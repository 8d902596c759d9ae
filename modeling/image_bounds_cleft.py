"""Bounded image decoding: a pixel budget checked from headers before anything is allocated, large images reduced
before they become float, non-finite pixels refused.

- `check_pixel_budget(height, width, frames, source)`: an image whose header claims more than
  `max_image_pixels()` pixels (all frames together) is refused with one line naming it, before decoding. The
  budget is 8192 x 8192 (67 M pixels: above the largest real mammograms, ~4 k x 6 k); the environment variable
  `CLEFT_MAX_IMAGE_PIXELS` changes it (a number of pixels; 0: no limit).
- `box_reduce_to_float(values, factor)`: integer images are box-averaged by `factor` in bands of rows, each band
  converted to float on its own, so a large image never exists as a full float copy.
- `check_finite_pixels(tensor, source)`: NaN/inf pixels (float images, DICOM float pixel data) are an error
  naming the image; they would silently turn every score into NaN.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "CLEFT_MAX_IMAGE_PIXELS"
BAND_ELEMENTS = 1 << 22  # ~4 M values per float band (16 MB)


class ImageTooLargeError(ValueError):
    """An image header claims more pixels than the pixel budget."""


def max_image_pixels() -> int | None:
    """The pixel budget: `CLEFT_MAX_IMAGE_PIXELS` if set (0 or "none": unlimited), else 8192 x 8192."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    if value in ("0", "none"):
        return None
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a number of pixels (0: no limit), got {value!r}") from None


def _named(source: str | None) -> str:
    return f"image {source}" if source else "the image"


def check_pixel_budget(height: int, width: int, frames: int = 1, source: str | None = None) -> None:
    """Raise `ImageTooLargeError` (naming `source`) when `height x width x frames` exceeds the budget."""
    budget = max_image_pixels()
    total = int(height) * int(width) * max(1, int(frames or 1))
    if budget is not None and total > budget:
        frames_text = f" x {frames} frames" if frames and int(frames) > 1 else ""
        raise ImageTooLargeError(
            f"{_named(source)} claims {width} x {height} pixels{frames_text} ({total / 1e6:.0f} M), over the pixel "
            f"budget of {budget / 1e6:.0f} M; if it is a real image, raise {MAX_PIXELS_ENV} (a number of pixels)"
        )


def box_reduce_to_float(values: torch.Tensor, factor: int) -> torch.Tensor:
    """`(C, H, W)` integer (or float) values -> `(C, H // factor, W // factor)` float32 box means, computed in
    bands of rows (as `avg_pool2d(values.float(), factor)`, without the full-size float copy)."""
    height, width = values.shape[-2:]
    usable = height // factor * factor
    rows = max(factor, BAND_ELEMENTS // max(1, width * values.shape[0]) // factor * factor)
    bands = [
        F.avg_pool2d(values[:, top : min(top + rows, usable)].float().unsqueeze(0), factor)[0]
        for top in range(0, usable, rows)
    ]
    return torch.cat(bands, dim=1)


def check_finite_pixels(tensor: torch.Tensor, source: str | None = None) -> None:
    """Raise `ValueError` naming `source` when a float image holds NaN or infinite values."""
    if tensor.is_floating_point():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{_named(source)} has {bad} NaN/infinite pixel values (of {tensor.numel()}); fix or "
                "drop the image (its scores would all be NaN)"
            )


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageTooLargeError",
    "box_reduce_to_float",
    "check_finite_pixels",
    "check_pixel_budget",
    "max_image_pixels",
]
