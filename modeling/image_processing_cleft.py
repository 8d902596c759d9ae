"""Image processor for CLEFT: radiographs and mammograms of any bit depth to normalised 3-channel tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .image_bounds_cleft import box_reduce_to_float, check_finite_pixels, check_pixel_budget
from .reference_preprocessing_cleft import reference_eval_pixels

try:  # PIL is a transformers dependency for vision, but keep the processor usable without it.
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None


HIGH_BIT_DEPTH_SCALINGS = ("min_max", "max_value")
LARGE_IMAGE_PIXELS = 1 << 24  # above this (4096 x 4096), 8/16-bit images are reduced before becoming float
# "cleft": the steps below; "reference": the authors' CheXpert evaluation steps (converted checkpoints).
PREPROCESSINGS = ("cleft", "reference")


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance of the histogram)."""
    index = (values.float().flatten().clamp(0.0, 1.0) * bins).long().clamp_(max=bins - 1)
    histogram = torch.bincount(index, minlength=bins).double()  # torch.histc is ~20x slower on CPU
    weights = histogram / histogram.sum().clamp_min(1)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    background = weights.cumsum(0)
    cumulative_mean = (weights * centres).cumsum(0)
    between = (cumulative_mean[-1] * background - cumulative_mean) ** 2 / (background * (1.0 - background))
    return float(edges[int(torch.nan_to_num(between, nan=0.0, posinf=0.0).argmax()) + 1])


def otsu_crop(tensor: torch.Tensor, min_fraction: float = 0.005) -> torch.Tensor:
    """Crop `(C, H, W)` in [0, 1] to the bounding box of the Otsu foreground (the breast on a mammogram).

    Rows/columns count as foreground when more than `min_fraction` of their pixels are (ignores specks).
    The image is returned unchanged when no foreground is found.
    """
    grey = tensor.mean(dim=0)
    stride = max(1, min(grey.shape) // 256)
    mask = grey > otsu_threshold(grey[::stride, ::stride])
    rows = torch.nonzero(mask.float().mean(dim=1) > min_fraction).flatten()
    cols = torch.nonzero(mask.float().mean(dim=0) > min_fraction).flatten()
    if not len(rows) or not len(cols):
        return tensor
    return tensor[:, int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]


def _as_hw_pair(value: int | dict[str, int], name: str) -> dict[str, int]:
    if isinstance(value, int):
        return {"height": value, "width": value}
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return {"height": int(value["height"]), "width": int(value["width"])}
    raise ValueError(f"{name} must be an int or a dict with 'height' and 'width', got {value!r}")


class CLEFTImageProcessor(BaseImageProcessor):
    r"""All inference preprocessing of CLEFT, saved with the model (`preprocessor_config.json`), so training
    evaluation, stage 2, the evaluation script, a reloaded processor and the pipelines see identical tensors.

    Steps: to float in [0, 1] (uint8 / 255; uint16 and floats outside [0, 1] per `high_bit_depth_scaling`:
    `"min_max"` per image, medical images rarely use the full 16-bit range, or `"max_value"`: / 65535) ->
    grey (`do_convert_grayscale`, mean of RGB) -> Otsu foreground crop (`do_otsu_crop`: the breast on a
    mammogram, the body on a radiograph) -> shorter side to `size` (large images first box-averaged by the
    integer factor that keeps them >= `size`, then antialiased bilinear) -> centre crop -> grey replicated to 3 channels, `(x - mean) / std`.
    Training transforms add augmentation on top of `prepare` (everything up to the resize).

    `preprocessing="reference"` replaces all steps by the reference code's evaluation preprocessing (256
    letterbox, Otsu crop, 224 x 224 bilinear; for models converted from the authors' checkpoints).

    Accepts PIL images (L, I;16, I, F, RGB, RGBA), numpy arrays (uint8, uint16 or float; HW, HWC or CHW) and
    torch tensors. Output: `pixel_values` of shape `(batch, 3, crop_height, crop_width)`, float32.
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
        do_convert_grayscale: bool = True,
        do_otsu_crop: bool = False,
        otsu_min_fraction: float = 0.005,
        high_bit_depth_scaling: str = "min_max",
        preprocessing: str = "cleft",
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
        if high_bit_depth_scaling not in HIGH_BIT_DEPTH_SCALINGS:
            raise ValueError(
                f"high_bit_depth_scaling must be one of {HIGH_BIT_DEPTH_SCALINGS}, got {high_bit_depth_scaling!r}"
            )
        self.do_resize = do_resize
        self.do_center_crop = do_center_crop
        self.do_normalize = do_normalize
        self.do_convert_grayscale = bool(do_convert_grayscale)
        self.do_otsu_crop = bool(do_otsu_crop)
        self.otsu_min_fraction = float(otsu_min_fraction)
        self.high_bit_depth_scaling = high_bit_depth_scaling
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {preprocessing!r}")
        self.preprocessing = preprocessing

    # ----------------------------------------------------------------- single-image steps
    def to_float_tensor(self, image: Any) -> torch.Tensor:
        """Any supported image -> float tensor `(C, H, W)` in [0, 1] with C in {1, 3}.

        A PIL image over the pixel budget is refused from its header, before decoding; 8/16-bit images larger
        than `LARGE_IMAGE_PIXELS` that the resize will box-average anyway are averaged before the conversion
        to float (in bands; the same values up to float rounding); NaN/inf pixels are an error
        (`image_bounds_cleft`)."""
        if Image is not None and isinstance(image, Image.Image):
            check_pixel_budget(image.height, image.width, source=getattr(image, "filename", None))
            if image.mode in ("RGBA", "P", "LA", "CMYK", "YCbCr"):
                image = image.convert("RGB" if image.mode != "LA" else "L")
            array = np.array(image)
            if image.mode.startswith("I;16"):
                array = array.astype(np.uint16)
            image = array
        if isinstance(image, np.ndarray) and image.dtype in (np.uint8, np.uint16):
            reduced = self._reduced_before_float(image)
            if reduced is not None:
                return reduced
        if isinstance(image, np.ndarray):
            tensor = torch.from_numpy(
                np.ascontiguousarray(image.astype(np.float32) if image.dtype == np.uint16 else image)
            )
            dtype = image.dtype
        elif isinstance(image, torch.Tensor):
            tensor, dtype = image.detach().cpu(), image.dtype
        else:
            raise TypeError(f"unsupported image type {type(image).__name__}: use PIL, numpy or torch")
        tensor = self._channels_first(tensor)
        if dtype in (np.uint8, torch.uint8):
            return tensor.float().div_(255.0)  # in place on the new float tensor: one allocation, not two
        tensor = tensor.float()
        check_finite_pixels(tensor)
        if dtype in (np.uint16, torch.uint16) or tensor.min() < 0 or tensor.max() > 1:
            if self.high_bit_depth_scaling == "max_value":
                return (tensor / 65535.0).clamp_(0.0, 1.0)
            low, high = tensor.amin(), tensor.amax()
            tensor = (tensor - low) / (high - low).clamp_min(1e-8)
        return tensor

    def _reduced_before_float(self, array: np.ndarray) -> torch.Tensor | None:
        """A large 8/16-bit `array` box-averaged by the resize's integer factor, then scaled as `to_float_tensor`
        scales it; None when that does not apply (small image, no resize, Otsu crop first: full resolution)."""
        if not self.do_resize or self.do_otsu_crop or array.shape[0] * array.shape[1] <= LARGE_IMAGE_PIXELS:
            return None
        values = self._channels_first(torch.from_numpy(np.ascontiguousarray(array)))  # a view, no copy
        factor = min(values.shape[-2:]) // self.size["shortest_edge"]
        if factor < 2:
            return None
        reduced = box_reduce_to_float(values, factor)
        if array.dtype == np.uint8:
            return reduced / 255.0
        if self.high_bit_depth_scaling == "max_value":
            return (reduced / 65535.0).clamp_(0.0, 1.0)
        low, high = float(array.min()), float(array.max())
        return (reduced - low) / max(high - low, 1e-8)

    def prepare(self, image: Any) -> torch.Tensor:
        """Every step before the resize: `(C, H, W)` float in [0, 1], grey (C = 1) and Otsu-cropped when set.
        Training transforms augment this tensor; `preprocess` resizes, crops and normalises it."""
        tensor = self.to_float_tensor(image)
        if self.do_convert_grayscale and tensor.shape[0] == 3:
            tensor = tensor.mean(dim=0, keepdim=True)
        return otsu_crop(tensor, self.otsu_min_fraction) if self.do_otsu_crop else tensor

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
        raise ValueError(f"expected 1 (grey) or 3 (RGB) channels, got an image of shape {tuple(tensor.shape)}")

    def resize_and_crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """`(C, H, W)` -> `(C, crop_h, crop_w)`: shorter side to `size["shortest_edge"]`, centre crop."""
        if self.do_resize:
            factor = min(tensor.shape[-2:]) // self.size["shortest_edge"]
            if factor >= 2:  # cheap exact first step on large images
                tensor = F.avg_pool2d(tensor.unsqueeze(0), factor)[0]
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
        """`(C, H, W)` in [0, 1] -> `(3, H, W)`: grey replicated to 3 channels, then `(x - mean) / std`. A grey image
        with the same mean and std for every channel is normalised once and returned as a broadcast view
        (`expand`): read it or stack it (the batch is a copy), do not write into it in place."""
        uniform = len(set(self.image_mean)) == 1 and len(set(self.image_std)) == 1
        if tensor.shape[0] == 1 and self.do_normalize and uniform:
            grey = (tensor - self.image_mean[0]).div_(self.image_std[0])
            return grey.expand(3, -1, -1)
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        elif tensor.shape[0] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {tensor.shape[0]}")
        if not self.do_normalize:
            return tensor.contiguous()
        mean = torch.tensor(self.image_mean, dtype=tensor.dtype).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=tensor.dtype).view(3, 1, 1)
        return (tensor - mean).div_(std)

    def preprocess_one(self, image: Any) -> torch.Tensor:
        """One image -> `(3, crop_h, crop_w)` normalised tensor (all steps; `preprocessing="reference"`: the
        reference code's evaluation steps instead, see `reference_preprocessing_cleft`)."""
        if self.preprocessing == "reference":
            return reference_eval_pixels(image, self.image_mean, self.image_std, self.crop_size["height"])
        return self.normalize_tensor(self.resize_and_crop(self.prepare(image)))

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
        pixel_values = torch.stack([self.preprocess_one(image) for image in batch])
        if return_tensors == "np":
            return BatchFeature({"pixel_values": pixel_values.numpy()})
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=None)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)


__all__ = ["CLEFTImageProcessor", "otsu_crop", "otsu_threshold"]
