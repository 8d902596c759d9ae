"""Building blocks of the synthetic chest X-ray renderer: soft masks and segment profiles, and the fields it
draws with at one image size (coordinate grid, vignette, noise bank, vessel and rib textures), computed once per
size and cached."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def per_size_fields(size: int) -> dict[str, np.ndarray]:
    """Cached per-size fields: coordinate grid, vignette, a noise bank and a bank of lung vessel textures."""
    axis = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    v, u = np.meshgrid(axis, axis, indexing="ij")
    rng = np.random.default_rng(20240731)
    vessels = np.stack([_vessel_tree(u, v, rng) for _ in range(4)])
    return {
        "u": u,
        "v": v,
        "vignette": (1.0 - 0.08 * (u * u + v * v)).astype(np.float32),
        "noise": rng.standard_normal((4, size, size), dtype=np.float32),
        "vessels": vessels,
        "spine": (0.8 + 0.2 * np.cos(52.0 * v)).astype(np.float32),
        "ribs": _rib_bank(u, v, rng),
        "hila": np.exp(-((np.abs(u) - 0.2) ** 2 + (v + 0.05) ** 2) / 0.006).astype(np.float32),
    }


def _rib_bank(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, count: int = 6) -> np.ndarray:
    """Rib shadows in image coordinates: posterior ribs (horizontal medially, curving down laterally) and fainter
    anterior ribs (sloping down medially), for a few spacings and phases. Values in [0, 0.16]."""
    au = np.abs(u)
    bank = []
    for _ in range(count):
        spacing, phase = rng.uniform(0.13, 0.16), rng.uniform(0.0, 1.0)
        posterior = np.clip(np.cos((v - 0.6 * au * au) * (2 * np.pi / spacing) - 2 * np.pi * phase) - 0.3, 0.0, 1.0)
        anterior = np.clip(np.cos((v + 0.5 * au) * (2 * np.pi / (1.3 * spacing)) + 2 * np.pi * phase) - 0.4, 0.0, 1.0)
        bank.append((0.1 * posterior**2 + 0.06 * anterior**2).astype(np.float32))
    return np.stack(bank)


def _vessel_tree(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pulmonary vessel markings: branching, tapering segments from both hila, lightly blurred; values ~[0, 1]."""
    texture = np.zeros_like(u)
    stack = [
        (sign * 0.2, -0.05, angle if sign > 0 else np.pi - angle, 0.22, 0.012)
        for sign in (-1.0, 1.0)
        for angle in np.linspace(-1.2, 1.3, 6) + rng.uniform(-0.15, 0.15, 6)
    ]
    size = u.shape[0]
    while stack:
        x0, y0, angle, length, width = stack.pop()
        x1, y1 = x0 + length * np.cos(angle), y0 - length * np.sin(angle)
        lo = [max(0, int((min(a, b) - 3 * width + 1) * size / 2) - 1) for a, b in ((y0, y1), (x0, x1))]
        hi = [min(size, int((max(a, b) + 3 * width + 1) * size / 2) + 2) for a, b in ((y0, y1), (x0, x1))]
        window = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        if hi[0] > lo[0] and hi[1] > lo[1]:
            profile = segment_profile(u[window], v[window], x0, y0, x1, y1, width) * np.float32(width / 0.012)
            np.maximum(texture[window], profile, out=texture[window])
        if width > 0.004:
            for turn in (-0.45, 0.45):
                stack.append(
                    (x1, y1, angle + turn + rng.uniform(-0.2, 0.2), length * rng.uniform(0.6, 0.8), width * 0.7)
                )
    kernel = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
    for axis in (0, 1):
        texture = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), axis, texture)
    return (texture / max(float(texture.max()), 1e-6)).astype(np.float32)


def soft_ramp(inside: np.ndarray, sharpness: float) -> np.ndarray:
    """Soft mask from a field that is > 0 inside (linear ramp of width 1/sharpness)."""
    out = inside * np.float32(sharpness)
    np.maximum(out, 0.0, out=out)
    return np.minimum(out, 1.0, out=out)


def segment_profile(x, y, x0, y0, x1, y1, sigma):
    """Profile (peak 1, ~Gaussian of width ``sigma``) around the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) * (1.0 / (dx * dx + dy * dy + 1e-9)), 0.0, 1.0)
    ex, ey = x - x0 - t * dx, y - y0 - t * dy
    return np.clip(1.0 - (ex * ex + ey * ey) * (1.0 / (4.0 * sigma * sigma)), 0.0, 1.0) ** 2


__all__ = ["per_size_fields", "segment_profile", "soft_ramp"]
