"""CLEFT zero-shot classification in the browser (a Hugging Face Space): upload a PNG / JPEG / DICOM, pick a prompt
set or type class names, see the probabilities, the image exactly as the model sees it and the similarity maps
(per-token terms that add up to each class's logit) of the top classes.

    python examples/app/app.py --model outputs/demo/mammo/model   # any CLEFT folder or Hub id

It listens where Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say (default 127.0.0.1:7860). On a Space, the
model comes from the CLEFT_MODEL variable. API (gradio_client): `Client(url).predict(handle_file(path), prompt set,
class names, top_k, api_name="/classify")` -> (message, probabilities, model input, similarity maps).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image
import torch

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.data.dicom import is_dicom, read_dicom_header
from cleft_hf.data.transforms import load_image
from cleft_hf.evaluation.similarity_plots import figure_to_array, processed_image, similarity_figure
from cleft_hf.modeling.image_bounds_cleft import MAX_PIXELS_ENV, check_pixel_budget

MAX_FILE_SIZE = "200mb"
TYPED = "typed class names"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def check_dimensions(path: str) -> None:
    """ValueError (one line) unless `path` is an image or DICOM with pixels whose header size is within the
    library's pixel budget (`CLEFT_MAX_IMAGE_PIXELS`, 8192 x 8192 by default): only the header is read, so a
    decompression bomb is refused before any decoding."""
    if is_dicom(path):
        header = read_dicom_header(path)  # ValueError when not DICOM / corrupt / without pixel data
        height, width = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    else:
        try:
            with Image.open(path) as image:  # lazy: parses the header only
                width, height = image.size
        except Image.DecompressionBombError as error:
            raise ValueError(f"image refused as a decompression bomb: {error}") from error
        except Exception as error:  # PIL raises many types for files it cannot identify
            raise ValueError(f"not an image PIL can read (PNG, JPEG, ...) or a DICOM file: {error}") from error
    check_pixel_budget(height, width, source=Path(path).name)


def prompt_sets(model: CLEFTModel) -> dict[str, dict]:
    """Choice label -> `zero_shot_classify` keyword arguments: hand prompts and learned prompts per task."""
    choices = {f"hand prompts: {task}": {"task": task} for task in (model.config.hand_prompts or {})}
    for task in model.prompt_set_names():
        choices[f"learned prompts: {task or 'default'}"] = {"use_learned_prompts": True, "task": task}
    choices[TYPED] = {}
    return choices


def class_labels(model: CLEFTModel, kwargs: dict, typed: str) -> list[str]:
    """The class names a prompt-set choice scores (typed ones: comma-separated)."""
    if kwargs.get("use_learned_prompts"):
        return list(model.prompt_set(kwargs["task"])[1])
    if "task" in kwargs:
        return list(model.config.hand_prompts[kwargs["task"]])
    names = [name.strip() for name in (typed or "").split(",") if name.strip()]
    if not names:
        raise ValueError("type at least one class name (comma-separated), or choose a prompt set")
    return names


def build_app(model_name_or_path: str, examples: list[str] | None = None) -> gr.Blocks:
    """The Gradio app of one model (loaded once, eval mode, CPU or the first GPU)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = CLEFTModel.from_pretrained(model_name_or_path).to(device).eval()
    processor = CLEFTProcessor.from_pretrained(model_name_or_path)
    image_processor = processor.image_processor
    choices = prompt_sets(model)

    def classify(file, prompt_set, typed_names, top_k):
        if file is None:
            return "Upload an image first.", None, None, None
        path = file if isinstance(file, str) else getattr(file, "name", str(file))
        try:
            check_dimensions(path)
            kwargs = choices.get(prompt_set)
            if kwargs is None:
                raise ValueError(f"unknown prompt set {prompt_set!r}; choose one of {list(choices)}")
            labels = class_labels(model, kwargs, typed_names)
            names = None if kwargs else labels
            pixels = image_processor(images=load_image(path))["pixel_values"].to(device)
        except (ValueError, RuntimeError, OSError) as error:
            return f"**Cannot use this file:** {str(error).replace(path, Path(path).name)}", None, None, None
        probabilities = model.zero_shot_classify(pixels, names, processor, **kwargs)[0].float().cpu()
        shown = processed_image(pixels[0], image_processor.image_mean, image_processor.image_std)
        message, maps_image = f"Scored {len(labels)} classes.", None
        try:
            maps = model.similarity_maps(pixels, names, processor, **kwargs)
            top = probabilities.argsort(descending=True)[: max(1, int(top_k))]
            titles = [f"{labels[i]} ({probabilities[i]:.2f})" for i in top.tolist()]
            figure = similarity_figure(shown, maps.patch_maps[0, top], titles, "similarity maps (sum = logit)")
            maps_image = figure_to_array(figure)
        except ValueError as error:  # `cls` pooling or an MLP head: no exact map
            message += f" No similarity map: {error}"
        scores = {label: float(p) for label, p in zip(labels, probabilities.tolist())}
        return message, scores, (shown * 255).round().astype(np.uint8), maps_image

    with gr.Blocks(title="CLEFT zero-shot classification") as app:
        gr.Markdown(
            f"# CLEFT zero-shot classification\nModel: `{model_name_or_path}`. Upload a PNG, JPEG or "
            "DICOM image; the maps show which image tokens raise (red) or lower (blue) each class's score."
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="image (PNG, JPEG or DICOM)", type="filepath")
                prompt_set = gr.Dropdown(list(choices), value=next(iter(choices)), label="prompts")
                typed = gr.Textbox(label=f"class names for '{TYPED}' (comma-separated)")
                top_k = gr.Slider(1, 5, value=3, step=1, label="similarity maps of the top classes")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                message = gr.Markdown()
                scores = gr.Label(label="probabilities", num_top_classes=10)
                model_input = gr.Image(label="model input (after the processor)", type="numpy")
                maps_image = gr.Image(label="similarity maps", type="numpy")
        if examples:
            gr.Examples(examples=[[path] for path in examples], inputs=[upload])
        button.click(
            classify,
            [upload, prompt_set, typed, top_k],
            [message, scores, model_input, maps_image],
            api_name="classify",
        )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="CLEFT zero-shot classification app (Gradio).")
    parser.add_argument("--model", default=os.environ.get("CLEFT_MODEL"), help="CLEFT model folder or Hub id.")
    parser.add_argument("--examples", default=None, help="Folder of example images (PNG, JPEG, DICOM) to pick.")
    parser.add_argument(
        "--max_pixels", type=int, default=None, help=f"Largest image (pixels) decoded (sets {MAX_PIXELS_ENV})."
    )
    args = parser.parse_args()
    if not args.model:
        parser.error("--model is required (a CLEFT folder such as outputs/demo/mammo/model, or a Hub id)")
    if args.max_pixels is not None:  # the library's budget, for the header check and every decode
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    examples = None
    if args.examples:
        folder = Path(args.examples)
        if not folder.is_dir():
            parser.error(f"--examples {folder} is not a folder")
        examples = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:8]
    try:
        app = build_app(args.model, examples)
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: cannot load the CLEFT model {args.model!r}: {str(error).splitlines()[0]}\n")
    app.launch(max_file_size=MAX_FILE_SIZE)


if __name__ == "__main__":
    main()
