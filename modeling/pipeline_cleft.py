"""Zero-shot image classification pipeline of CLEFT, registered with the model (`config.custom_pipelines`), so

    pipeline("zero-shot-image-classification", model=folder_or_hub_id, trust_remote_code=True)

loads it with the remote code. It is transformers' `ZeroShotImageClassificationPipeline` (same arguments, same
scores) plus CLEFT's learned prompts: `use_learned_prompts=True` scores with the learned context of prompt set
`task` (e.g. "density"); `candidate_labels` then default to that set's classes and must be among them.
Local DICOM paths are decoded by cleft-hf's DICOM reader (as in training). Images are handed to the CLEFT image
processor as given (a 16-bit PNG or array keeps its bit depth; transformers'
own loader would convert it to 8-bit RGB), so the pipeline sees the tensors of training and evaluation.
"""

from __future__ import annotations

from typing import Any

from transformers import ZeroShotImageClassificationPipeline
from transformers.image_utils import load_image
from transformers.pipelines.base import Pipeline

from .image_bounds_cleft import check_pixel_budget


def _read_dicom(path: str) -> Any:
    """A DICOM file decoded as training and evaluation decode it (`cleft_hf.data.read_dicom`: modality LUT, VOI,
    MONOCHROME1 inversion, pixel budget), so the pipeline sees their tensors; that reader is cleft-hf's."""
    try:
        from cleft_hf.data.dicom import read_dicom
    except ImportError:
        raise ImportError(
            f"{path} is a DICOM file: reading it needs the cleft-hf package (with pydicom), as in "
            "training; install it, or pass the decoded pixel array instead of the path"
        ) from None
    return read_dicom(path)


def _is_dicom(path: str) -> bool:
    """A `.dcm`/`.dicom`/`.dic` name or the `DICM` marker after the 128-byte preamble."""
    if path.lower().endswith((".dcm", ".dicom", ".dic")):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _open_image(image: Any, timeout: float | None) -> Any:
    """A local path is opened with PIL without converting its mode (refused from its header when over the pixel
    budget, see `image_bounds_cleft`), a DICOM path with cleft-hf's DICOM reader; URLs go through transformers'
    loader."""
    if isinstance(image, str) and not image.startswith(("http://", "https://")):
        if _is_dicom(image):
            return _read_dicom(image)
        from PIL import Image, ImageOps

        with Image.open(image) as opened:
            check_pixel_budget(opened.height, opened.width, source=image)
            opened.load()
            return ImageOps.exif_transpose(opened)
    if isinstance(image, str):
        return load_image(image, timeout=timeout)
    return image


class CLEFTZeroShotImageClassificationPipeline(ZeroShotImageClassificationPipeline):
    """`classifier(images, candidate_labels=None, *, hypothesis_template=..., use_learned_prompts=False, task=None)`
    -> `[{"label", "score"}, ...]` sorted by score (softmax over the classes, as transformers' pipeline)."""

    def __init__(self, **kwargs: Any):
        Pipeline.__init__(self, **kwargs)  # CLEFT is not in transformers' zero-shot model mapping (remote code)

    def __call__(self, image: Any, candidate_labels: list[str] | None = None, **kwargs: Any) -> Any:
        if "images" in kwargs:
            image = kwargs.pop("images")
        if image is None:
            raise ValueError("Cannot call the zero-shot-image-classification pipeline without an images argument!")
        if candidate_labels is None and not kwargs.get("use_learned_prompts"):
            raise ValueError(
                "candidate_labels are needed with hand prompts (they are optional only with "
                "use_learned_prompts=True, which defaults to the learned classes)"
            )
        return Pipeline.__call__(self, image, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(self, use_learned_prompts: bool = False, task: str | None = None, **kwargs: Any):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if task is not None and not use_learned_prompts:
            raise ValueError("task= picks a learned prompt set: pass use_learned_prompts=True with it")
        if use_learned_prompts:
            _, stored, _ = self.model.prompt_set(task)  # an unknown set is an error naming the known ones
            preprocess["learned_prompts"] = {"task": task, "class_names": stored}
        return preprocess, forward, postprocess

    def preprocess(
        self,
        image: Any,
        candidate_labels: list[str] | None = None,
        hypothesis_template: str = "This is a photo of {}.",
        timeout: float | None = None,
        tokenizer_kwargs: dict | None = None,
        learned_prompts: dict | None = None,
    ) -> dict:
        inputs = self.image_processor(images=[_open_image(image, timeout)], return_tensors="pt").to(self.dtype)
        if learned_prompts is not None:
            inputs["candidate_labels"] = list(candidate_labels or learned_prompts["class_names"])
            inputs["learned_prompts"] = learned_prompts
            return inputs
        inputs["candidate_labels"] = candidate_labels
        sequences = [hypothesis_template.format(label) for label in candidate_labels]
        inputs["text_inputs"] = [
            self.tokenizer(sequences, return_tensors="pt", padding=True, **(tokenizer_kwargs or {}))
        ]
        return inputs

    def _forward(self, model_inputs: dict) -> dict:
        learned = model_inputs.pop("learned_prompts", None)
        if learned is None:
            return super()._forward(model_inputs)
        labels = model_inputs.pop("candidate_labels")
        logits = self.model.zero_shot_classify(
            model_inputs["pixel_values"], labels, use_learned_prompts=True, task=learned["task"], return_logits=True
        )
        return {"candidate_labels": labels, "logits": logits}


__all__ = ["CLEFTZeroShotImageClassificationPipeline"]
