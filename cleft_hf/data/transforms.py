"""Image/text transforms applied with ``Dataset.set_transform``: decode (PIL, image path or DICOM path), then the
:class:`~cleft_hf.modeling.image_processing_cleft.CLEFTImageProcessor` (grey, Otsu crop, 16-bit scaling, resize,
crop, normalise: the preprocessing saved with the model), with augmentation in place of its resize + crop when
training, and optional report augmentation.

Output of a transform on a batch dict: ``pixel_values`` (list of float tensors (3, H, W)), ``text`` (list of str)
and ``labels`` when the batch has them, plus the ``keep_columns`` present. Tokenisation happens in the collator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import io
import math
import os
import re
from typing import Any

from datasets import Image as ImageFeature
import numpy as np
from PIL import Image as PILImage
import torch
import torch.nn.functional as F

from ..modeling.image_bounds_cleft import check_pixel_budget
from .affine_warp import affine_grid, crop_rotation_theta
from .dicom import is_dicom, read_dicom
from .resized_cache import SCALE_KEY

TEXT_AUGMENTS = (None, "shuffle", "sample")
# The training warp (bilinear, no antialiasing) downscales by at most this factor; larger images are first resized
# with antialiasing to the processor's shorter side.
MAX_WARP_DOWNSCALE = 1.25
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _reduce(image: PILImage.Image, target: int | None) -> PILImage.Image:
    """Downscale while the shorter side stays >= ``target`` (the cheap first resize steps of training): an integer
    box filter; then 8-bit images (L, RGB) still over ``MAX_WARP_DOWNSCALE * target`` are resized to a shorter side
    of ``target`` by PIL's antialiased bilinear filter, in 8 bits (before the float conversion, on fewer pixels)."""
    factor = min(image.size) // target if target else 1
    if factor >= 2:
        if image.mode.startswith("I;16"):  # PIL reduces 32-bit but not 16-bit integer images
            image = image.convert("I")
        try:
            image = image.reduce(factor)
        except (ValueError, NotImplementedError):  # modes PIL cannot reduce (e.g. some 16-bit layouts)
            return image
    if target and image.mode in ("L", "RGB") and min(image.size) > MAX_WARP_DOWNSCALE * target:
        scale = target / min(image.size)
        size = (max(target, round(image.size[0] * scale)), max(target, round(image.size[1] * scale)))
        image = image.resize(size, PILImage.Resampling.BILINEAR)  # PIL's bilinear widens its support: antialiased
    return image


def open_image(source, target: int | None = None) -> PILImage.Image:
    """A decoded PIL image; with ``target``, JPEGs are decoded at reduced size (DCT scaling by 1/2, 1/4 or 1/8 in
    draft mode) while the shorter side stays >= ``target``. Errors name the file; an image whose header claims more
    pixels than the pixel budget (``CLEFT_MAX_IMAGE_PIXELS``) is refused before decoding."""
    try:
        image = PILImage.open(source)
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises many types for unreadable files; name the file
        raise ValueError(f"cannot decode image {getattr(source, 'name', source)}: {err}") from err
    check_pixel_budget(image.height, image.width, source=getattr(source, "name", source))  # header only
    try:
        return _load(image, target)
    except Exception as err:
        raise ValueError(f"cannot decode image {getattr(source, 'name', source)}: {err}") from err


def _load(image: PILImage.Image, target: int | None) -> PILImage.Image:
    if target and image.format == "JPEG" and min(image.size) >= 2 * target:
        scale = min(image.size) // target  # JPEG DCT scaling decodes directly at 1/2, 1/4 or 1/8 size
        image.draft(image.mode, (image.size[0] // scale, image.size[1] // scale))
    image.load()
    return image


def _scaled(image: PILImage.Image, target: int | None) -> Any:
    """A resized-cache PNG (16-bit values = round(x * 65535), see :mod:`cleft_hf.data.resized_cache`) as float32
    (H, W) in [0, 1]; other images unchanged (apart from the cheap integer reduction)."""
    if image.info.get(SCALE_KEY) is None:
        return _reduce(image, target)
    scale = float(image.info[SCALE_KEY])
    return np.asarray(_reduce(image, target), dtype=np.float32) / scale


def load_image(value: Any, target: int | None = None) -> Any:
    """A dataset cell to something ``CLEFTImageProcessor`` takes: PIL images, arrays and tensors pass through;
    paths are read (DICOM with :func:`read_dicom`, else PIL); ``{"path", "bytes"}`` dicts too (the cells of an
    ``Image(decode=False)`` column). With ``target`` (the shorter side the pipeline resizes to next), images
    are first reduced by an integer factor (JPEGs already while decoding) that keeps the shorter side >=
    ``target``: training uses it; evaluation decodes in full, so it sees exactly the image processor's tensors."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return _scaled(open_image(io.BytesIO(value["bytes"]), target), target)
        value = value.get("path")
    if isinstance(value, (str, os.PathLike)):
        if is_dicom(value):
            return read_dicom(value, min_size=target)
        return _scaled(open_image(value, target), target)
    if value is None:
        raise ValueError("image cell is empty (None)")
    return value


class ImageDecodeError(OSError):
    """An image cell that cannot be decoded or converted; the message names its file."""


def image_source(value: Any) -> str:
    """The file behind a dataset image cell (a path, or the path of an ``Image(decode=False)`` dict), for messages."""
    if isinstance(value, dict):
        return str(value.get("path") or "<image bytes without a path>")
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return f"<in-memory {type(value).__name__}>"


def _decode_error(value: Any, error: Exception) -> ImageDecodeError:
    """`error` of decoding the cell `value` as an `ImageDecodeError` whose message names the file."""
    source = image_source(value)
    return ImageDecodeError(str(error) if source in str(error) else f"cannot decode image {source}: {error}")


def with_image_transform(dataset, transform):
    """``dataset.with_transform(transform)`` after switching ``Image`` columns to ``decode=False`` (a metadata-only
    cast), so the transform decodes the files itself: JPEGs at reduced size, faster. Dataset or DatasetDict."""
    features = next(iter(dataset.values())).features if isinstance(dataset, dict) else dataset.features
    for name, feature in features.items():
        if isinstance(feature, ImageFeature) and feature.decode:
            dataset = dataset.cast_column(name, ImageFeature(mode=feature.mode, decode=False))
    return dataset.with_transform(transform)


def augment_text(text: str, mode: str | None, rng: np.random.Generator) -> str:
    """Sentence-level report augmentation: "shuffle" permutes the sentences, "sample" keeps a random non-empty
    subset (each sentence with probability 0.5, in order)."""
    if mode is None or not text:
        return text
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    if len(sentences) < 2:
        return text
    if mode == "shuffle":
        return " ".join(sentences[i] for i in rng.permutation(len(sentences)))
    keep = rng.random(len(sentences)) < 0.5
    if not keep.any():
        keep[rng.integers(len(sentences))] = True
    return " ".join(s for s, k in zip(sentences, keep) if k)


@dataclass
class Augmentation:
    """The options of the training transform (`augmentation` of stage 1), with their defaults: random resized
    crop of area fraction `scale` and aspect `ratio`, rotation up to `max_rotation` degrees, translation up to
    `max_translate` of the size, brightness/contrast jitter, horizontal flip, report `text_augment`."""

    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_rotation: float = 10.0
    max_translate: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    hflip: bool = False
    text_augment: str | None = None

    def __post_init__(self) -> None:
        if self.text_augment not in TEXT_AUGMENTS:
            raise ValueError(f"text_augment must be one of {TEXT_AUGMENTS}, got {self.text_augment!r}")
        for name in ("scale", "ratio"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"{name} takes two numbers [min, max], got {value!r}")
            setattr(self, name, (float(value[0]), float(value[1])))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        for name in ("max_rotation", "max_translate", "brightness", "contrast"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.hflip, bool):
            raise ValueError(f"hflip must be true or false, got {self.hflip!r}")


class ImageTextTransform:
    """Callable for ``Dataset.set_transform``; build it with :func:`make_train_transform` / :func:`make_eval_transform`."""

    def __init__(
        self,
        image_processor,
        *,
        train: bool,
        augmentation: Augmentation | None = None,
        keep_columns: Sequence[str] = ("label_mask",),
        image_column: str = "image",
        seed: int | None = None,
        skip_bad: bool = False,
    ):
        augmentation = augmentation or Augmentation()
        self.image_processor = image_processor
        self.train = train
        self.scale, self.ratio = augmentation.scale, augmentation.ratio
        self.max_rotation, self.max_translate = augmentation.max_rotation, augmentation.max_translate
        self.brightness, self.contrast = augmentation.brightness, augmentation.contrast
        self.hflip, self.text_augment = augmentation.hflip, augmentation.text_augment
        self.keep_columns, self.image_column, self.seed = tuple(keep_columns), image_column, seed
        self.skip_bad = skip_bad  # undecodable images: skipped (counted by the training loop) instead of raising
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_rng"], state["_rng_owner"] = None, None
        return state

    @property
    def rng(self) -> np.random.Generator:
        """Per-process generator: DataLoader workers draw different streams (from torch's per-worker seed)."""
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), info.seed if info is not None else -1)
        if self._rng is None or self._rng_owner != owner:
            entropy = [] if self.seed is None else [self.seed]
            if info is not None:
                entropy.append(info.seed % (2**63))
            self._rng = np.random.default_rng(entropy or None)
            self._rng_owner = owner
        return self._rng

    # ------------------------------------------------------------------ images
    def _load(self, value: Any) -> Any:
        """Decoded cell; reduced on decode when training (evaluation: in full, exactly the processor's input)."""
        return load_image(value, self.image_processor.size["shortest_edge"] if self.train else None)

    def _crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        rng, area = self.rng, height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            crop_w, crop_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                return (
                    int(rng.integers(0, height - crop_h + 1)),
                    int(rng.integers(0, width - crop_w + 1)),
                    crop_h,
                    crop_w,
                )
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side

    def _augment(self, tensor: torch.Tensor) -> torch.Tensor:
        """`(C, H, W)` in [0, 1] -> `(C, crop_h, crop_w)` in [0, 1]: random resized crop + rotation + translation
        (+ flip) as one affine resampling, then brightness/contrast (one fused pass)."""
        rng = self.rng
        shortest = self.image_processor.size["shortest_edge"]
        height, width = tensor.shape[-2:]
        if min(height, width) > MAX_WARP_DOWNSCALE * shortest:  # antialiased downscale first (8-bit images: done
            # on decode, `_reduce`): the warp below is plain bilinear
            factor = shortest / min(height, width)
            size = [round(height * factor), round(width * factor)]
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
            height, width = tensor.shape[-2:]
        out_h, out_w = self.image_processor.crop_size["height"], self.image_processor.crop_size["width"]
        top, left, crop_h, crop_w = self._crop_box(height, width)
        angle = math.radians(float(rng.uniform(-self.max_rotation, self.max_rotation)))
        shift_x = float(rng.uniform(-self.max_translate, self.max_translate)) * out_w
        shift_y = float(rng.uniform(-self.max_translate, self.max_translate)) * out_h
        flip = -1.0 if self.hflip and rng.random() < 0.5 else 1.0
        theta = crop_rotation_theta(
            (top, left, crop_h, crop_w), (height, width), (out_h, out_w), angle, (shift_x, shift_y), flip
        )
        grid = affine_grid(theta, out_h, out_w).to(tensor.dtype)
        tensor = F.grid_sample(tensor[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        gain = float(rng.uniform(1 - self.brightness, 1 + self.brightness)) if self.brightness > 0 else 1.0
        if self.contrast > 0:  # ((x * gain) - mean) * c + mean with mean = gain * mean(x), in one pass
            contrast = float(rng.uniform(1 - self.contrast, 1 + self.contrast))
            offset = gain * float(tensor.mean()) * (1.0 - contrast)
            return tensor.mul_(gain * contrast).add_(offset).clamp_(0.0, 1.0)
        return tensor.mul_(gain).clamp_(0.0, 1.0)

    def image(self, value: Any) -> torch.Tensor:
        """One dataset cell -> (3, H, W) normalised float tensor: the image processor's steps (eval), or its steps
        up to the resize, then the augmentation in place of resize + crop (train); `ImageDecodeError` (naming the
        file) if unreadable."""
        return self._tensor(value, self._decode(value))

    def _decode(self, value: Any) -> Any:
        try:
            return self._load(value)
        except Exception as error:  # PIL, pydicom and conversion errors alike: say which file
            raise _decode_error(value, error) from error

    def _tensor(self, value: Any, decoded: Any) -> torch.Tensor:
        try:
            if not self.train:
                return self.image_processor.preprocess_one(decoded)
            tensor = self.image_processor.prepare(decoded)
        except Exception as error:
            raise _decode_error(value, error) from error
        return self.image_processor.normalize_tensor(self._augment(tensor))

    def _or_skip(self, step, *args: Any) -> Any:
        try:
            return step(*args)
        except ImageDecodeError:
            if not self.skip_bad:
                raise
            return None

    def images(self, values: Sequence[Any]) -> list[torch.Tensor | None]:
        """A batch's cells -> tensors (None for an unreadable one with `skip_bad`). Training decodes every file of
        the batch first, then computes the tensors: the tensor code stays warm in the CPU caches between images
        (~0.5 ms an image on full-size JPEGs). Evaluation goes image by image (its decodes are full-size)."""
        if not self.train:
            return [self._or_skip(self.image, value) for value in values]
        decoded = [self._or_skip(self._decode, value) for value in values]
        return [
            None if image is None else self._or_skip(self._tensor, value, image)
            for value, image in zip(values, decoded)
        ]

    # ------------------------------------------------------------------ batches
    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.image_column not in batch:
            raise KeyError(f"batch has no image column '{self.image_column}' (columns: {sorted(batch)})")
        out: dict[str, list] = {"pixel_values": self.images(batch[self.image_column])}
        if self.skip_bad:  # rows whose image failed: pixel_values None, the file in `bad_image` (collator drops them)
            out["bad_image"] = [
                image_source(v) if t is None else None for v, t in zip(batch[self.image_column], out["pixel_values"])
            ]
        if "text" in batch:
            texts = batch["text"]
            if self.train and self.text_augment is not None:
                texts = [augment_text(t, self.text_augment, self.rng) for t in texts]
            out["text"] = list(texts)
        if "labels" in batch:
            out["labels"] = batch["labels"]
        for column in self.keep_columns:
            if column in batch:
                out[column] = batch[column]
        return out


def make_train_transform(
    image_processor,
    *,
    keep_columns: Sequence[str] = ("label_mask",),
    seed: int | None = None,
    skip_bad: bool = False,
    **augmentation: Any,
) -> ImageTextTransform:
    """Training transform with the `Augmentation` options given as keywords (the rest keep their defaults):
    random resized crop, small rotation/translation, brightness/contrast, optional horizontal flip, optional
    report sentence shuffle/sample. Deterministic for a ``seed`` in one process; DataLoader workers mix in
    torch's per-worker seed (reproducible under ``torch.manual_seed``)."""
    return ImageTextTransform(
        image_processor,
        train=True,
        augmentation=Augmentation(**augmentation),
        keep_columns=keep_columns,
        seed=seed,
        skip_bad=skip_bad,
    )


def make_eval_transform(
    image_processor, *, keep_columns: Sequence[str] = ("label_mask",), skip_bad: bool = False
) -> ImageTextTransform:
    """Evaluation transform: exactly the image processor (decode, then `image_processor.preprocess_one`)."""
    return ImageTextTransform(image_processor, train=False, keep_columns=keep_columns, skip_bad=skip_bad)
