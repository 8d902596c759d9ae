"""Similarity maps drawn over the processed image the model saw (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F


def processed_image(pixel_values: torch.Tensor, image_mean: Sequence[float], image_std: Sequence[float]) -> np.ndarray:
    """`(3, H, W)` normalised pixels -> `(H, W)` grey image in [0, 1] (the processor's normalisation undone)."""
    mean = torch.tensor(image_mean, dtype=pixel_values.dtype).view(3, 1, 1)
    std = torch.tensor(image_std, dtype=pixel_values.dtype).view(3, 1, 1)
    return (pixel_values.detach().cpu() * std + mean).mean(0).clamp(0, 1).numpy()


def similarity_figure(image: np.ndarray, patch_maps: torch.Tensor, titles: Sequence[str], suptitle: str = ""):
    """A matplotlib figure: `image` `(H, W)` and, per class, its map `(n_classes, gh, gw)` upsampled over it
    (red: the tokens that raise the class's logit, blue: those that lower it; one symmetric scale per figure)."""
    maps = patch_maps.detach().float().cpu()
    upsampled = F.interpolate(maps[None], size=image.shape, mode="nearest")[0].numpy()
    limit = float(np.abs(upsampled).max()) or 1.0
    figure, axes = plt.subplots(1, len(titles) + 1, figsize=(2.6 * (len(titles) + 1), 3.0), squeeze=False)
    axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("model input", fontsize=9)
    for axis, title, values in zip(axes[0, 1:], titles, upsampled):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        shown = axis.imshow(values, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.5)
        axis.set_title(textwrap.fill(title, 24), fontsize=9)
    for axis in axes[0]:
        axis.set_axis_off()
    figure.colorbar(shown, ax=list(axes[0]), fraction=0.02, pad=0.01, label="logit per token")
    if suptitle:
        figure.suptitle(suptitle, fontsize=10)
    return figure


def figure_to_array(figure) -> np.ndarray:
    """`(H, W, 3)` uint8 pixels of a figure (closed afterwards)."""
    figure.canvas.draw()
    array = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return array


def plot_similarity_maps(
    image: np.ndarray, patch_maps: torch.Tensor, titles: Sequence[str], path: Path, suptitle: str = ""
) -> Path:
    """`similarity_figure` saved as a PNG at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = similarity_figure(image, patch_maps, titles, suptitle)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


__all__ = ["figure_to_array", "plot_similarity_maps", "processed_image", "similarity_figure"]
