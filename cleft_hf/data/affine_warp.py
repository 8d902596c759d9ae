"""The geometry of the training warp: the affine matrix that maps a random resized crop, rotated and shifted, onto
the output, and its sampling grid (what ``F.affine_grid`` computes, faster on CPU for one image)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


def crop_rotation_theta(
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    out_size: tuple[int, int],
    angle: float,
    shift: tuple[float, float],
    flip: float = 1.0,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The `(2, 3)` affine matrix (``F.affine_grid`` convention: output -> input normalised coordinates) that maps
    an `out_size` output onto the crop `box` = (top, left, height, width) of a `size` = (H, W) input, rotated by
    `angle` radians about the crop centre, shifted by `shift` output pixels, mirrored when `flip` is -1."""
    (top, left, crop_h, crop_w), (height, width), (out_h, out_w) = box, size, out_size
    cos, sin = math.cos(angle), math.sin(angle)
    # output normalised coords -> output pixels -> undo shift -> undo rotation -> crop -> input normalised coords
    sx, sy = crop_w / width / (out_w / 2.0), crop_h / height / (out_h / 2.0)
    centre_x = (left + crop_w / 2.0) / width * 2.0 - 1.0
    centre_y = (top + crop_h / 2.0) / height * 2.0 - 1.0
    return (
        (sx * cos * out_w / 2.0 * flip, sx * sin * out_h / 2.0, centre_x - sx * (cos * shift[0] + sin * shift[1])),
        (-sy * sin * out_w / 2.0 * flip, sy * cos * out_h / 2.0, centre_y - sy * (-sin * shift[0] + cos * shift[1])),
    )


@functools.lru_cache(maxsize=8)
def _pixel_centres(count: int) -> np.ndarray:
    """`(count,)` float32 pixel centres in normalised coordinates (``align_corners=False``): (2 i + 1) / count - 1."""
    return ((np.arange(count, dtype=np.float64) * 2 + 1) / count - 1).astype(np.float32)


def affine_grid(theta, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(torch.tensor([theta]), [1, C, height, width], align_corners=False)`` for one `(2, 3)` matrix
    of floats: `(1, H, W, 2)` float32, each coordinate one outer sum over cached pixel centres (numpy: a few large
    operations instead of torch's batched matmul, ~3x faster on CPU right after a decode)."""
    xs, ys = _pixel_centres(width), _pixel_centres(height)
    grid = np.empty((1, height, width, 2), np.float32)
    for axis, (a, b, c) in enumerate(theta):
        np.add.outer(ys * np.float32(b), xs * np.float32(a) + np.float32(c), out=grid[0, :, :, axis])
    return torch.from_numpy(grid)


__all__ = ["affine_grid", "crop_rotation_theta"]
