"""Image processor for CLEFT: radiographs and mammograms of any bit depth to normalised 3-channel tensors."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

try:  # PIL is a transformers dependency for vision, but keep the processor usable without it.
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None


def _as_hw_pair(value: int | dict[str, int], name: str) -> dict[str, int]:
    if isinstance(value, int):
        return {"height": value, "width": value}
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return {"height": int(value["height"]), "width": int(value["width"])}
    raise ValueError(f"{name} must be an int or a dict with 'height' and 'width', got {value!r}")


class CLEFTImageProcessor(BaseImageProcessor):
    r"""Shorter-side resize, centre crop, grey to 3 channels, normalise with mean = std = 0.5.

    Accepts PIL images (L, I;16, I, F, RGB, RGBA), numpy arrays (uint8, uint16 or float; HW, HWC or CHW) and
    torch tensors. uint8 is divided by 255; uint16 and floats outside [0, 1] are min-max scaled per image
    (medical images rarely use the full 16-bit range).

    Output: `pixel_values` of shape `(batch, 3, crop_height, crop_width)`, float32.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int | dict[str, int] = 224,
        crop_size: int | dict[str, int] = 224,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        do_resize: bool = True,
        do_center_crop: bool = True,
        do_normalize: bool = True,
        **kwargs: Any,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        shortest = size["shortest_edge"] if isinstance(size, dict) else int(size)
        self.size = {"shortest_edge": int(shortest)}
        self.crop_size = _as_hw_pair(crop_size, "crop_size")
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std must have 3 values (one per output channel)")
        self.do_resize = do_resize
        self.do_center_crop = do_center_crop
        self.do_normalize = do_normalize

    # ----------------------------------------------------------------- single-image steps
    def to_float_tensor(self, image: Any) -> torch.Tensor:
        """Any supported image -> float tensor `(C, H, W)` in [0, 1] with C in {1, 3}."""
        if Image is not None and isinstance(image, Image.Image):
            if image.mode in ("RGBA", "P", "LA", "CMYK", "YCbCr"):
                image = image.convert("RGB" if image.mode != "LA" else "L")
            array = np.array(image)
            if image.mode.startswith("I;16"):
                array = array.astype(np.uint16)
            image = array
        if isinstance(image, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(image.astype(np.float32) if image.dtype == np.uint16 else image))
            dtype = image.dtype
        elif isinstance(image, torch.Tensor):
            tensor, dtype = image.detach().cpu(), image.dtype
        else:
            raise TypeError(f"unsupported image type {type(image).__name__}: use PIL, numpy or torch")
        tensor = self._channels_first(tensor)
        if dtype in (np.uint8, torch.uint8):
            return tensor.float() / 255.0
        tensor = tensor.float()
        if dtype in (np.uint16, torch.uint16) or tensor.min() < 0 or tensor.max() > 1:
            low, high = tensor.amin(), tensor.amax()
            tensor = (tensor - low) / (high - low).clamp_min(1e-8)
        return tensor

    @staticmethod
    def _channels_first(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.ndim == 2:
            return tensor.unsqueeze(0)
        if tensor.ndim != 3:
            raise ValueError(f"expected an image with 2 or 3 dimensions, got shape {tuple(tensor.shape)}")
        if tensor.shape[0] in (1, 3) and tensor.shape[-1] not in (1, 3):
            return tensor
        if tensor.shape[-1] in (1, 3):
            return tensor.permute(2, 0, 1)
        raise ValueError(
            f"expected 1 (grey) or 3 (RGB) channels, got an image of shape {tuple(tensor.shape)}"
        )

    def resize_and_crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """`(C, H, W)` -> `(C, crop_h, crop_w)`: shorter side to `size["shortest_edge"]`, centre crop."""
        if self.do_resize:
            height, width = tensor.shape[-2:]
            scale = self.size["shortest_edge"] / min(height, width)
            new_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
            if new_hw != (height, width):
                tensor = F.interpolate(
                    tensor.unsqueeze(0), size=new_hw, mode="bilinear", align_corners=False, antialias=True
                )[0].clamp_(0.0, 1.0)
        if self.do_center_crop:
            crop_h, crop_w = self.crop_size["height"], self.crop_size["width"]
            height, width = tensor.shape[-2:]
            if height < crop_h or width < crop_w:
                pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
                tensor = F.pad(tensor, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
                height, width = tensor.shape[-2:]
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            tensor = tensor[:, top : top + crop_h, left : left + crop_w]
        return tensor

    def normalize_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """`(C, H, W)` in [0, 1] -> `(3, H, W)`: grey replicated to 3 channels, then `(x - mean) / std`."""
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        elif tensor.shape[0] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {tensor.shape[0]}")
        if not self.do_normalize:
            return tensor.contiguous()
        mean = torch.tensor(self.image_mean, dtype=tensor.dtype).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=tensor.dtype).view(3, 1, 1)
        return (tensor - mean) / std

    # ----------------------------------------------------------------- batch entry point
    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """One image or a list of images -> `BatchFeature(pixel_values=(N, 3, H, W))`."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("no images given")
            batch = list(images)
        elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            batch = list(images)
        else:
            batch = [images]
        pixel_values = torch.stack(
            [self.normalize_tensor(self.resize_and_crop(self.to_float_tensor(image))) for image in batch]
        )
        if return_tensors == "np":
            return BatchFeature({"pixel_values": pixel_values.numpy()})
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=None)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)


__all__ = ["CLEFTImageProcessor"]
