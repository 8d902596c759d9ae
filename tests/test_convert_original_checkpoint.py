"""The converter of the authors' checkpoints: tiny checkpoints in the reference's exact layout, converted, compared
with an independent computation of the reference's forward (tests/reference_cleft.py) to 1e-5; the real-size
layout mapped on the meta device; refused files in one line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import reference_cleft as ref
import torch
from transformers import AutoTokenizer, GPT2Config

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.cli import run_cli
from cleft_hf.conversion import ConversionError, inspect_reference_state_dict, map_reference_state_dict
from cleft_hf.convert_original_checkpoint import (
    ConvertArguments,
    convert_original_checkpoint,
    main,
    prompt_learner_keys,
    reference_config,
)
from cleft_hf.demo.reference_checkpoint import REAL_VISION, reference_state_dict, write_reference_checkpoints
from cleft_hf.modeling.configuration_cleft import BIOMEDLM_CONFIG

CLASSES = ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural effusion"]
CAPTIONS = [
    "this is a chest x ray of a patient with edema",
    "there is no pleural effusion bilaterally.",
    "findings consistent with cardiomegaly in the right lower lobe. " * 12,
]  # > 64 tokens: truncated


def _image(seed: int) -> np.ndarray:
    """A 512 x 384 uint8 radiograph-like image (bright body on a dark border, noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:512, 0:384]
    body = ((rows - 250) / 200.0) ** 2 + ((cols - 190) / 150.0) ** 2 < 1
    return np.clip(20 + 150 * body + rng.normal(0, 25, (512, 384)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def converted(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"reference_{str(request.param)[6:]}")
    paths = write_reference_checkpoints(folder, dtype=request.param)
    for stage in (1, 2):
        convert_original_checkpoint(
            paths[f"stage{stage}"], folder / f"converted{stage}", text_model_name_or_path=str(paths["llm"])
        )
    return folder, paths


@pytest.fixture(scope="module")
def reference_processor_folder(tmp_path_factory):
    """A converted stage-1 model's folder (its processor: the reference's preprocessing)."""
    folder = tmp_path_factory.mktemp("reference_processor")
    paths = write_reference_checkpoints(folder)
    return convert_original_checkpoint(
        paths["stage1"], folder / "converted1", text_model_name_or_path=str(paths["llm"])
    )


def _state(path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def test_processor_gives_the_reference_pixels(reference_processor_folder):
    processor = CLEFTProcessor.from_pretrained(reference_processor_folder)
    grey = _image(0)
    for image in (grey, np.repeat(grey[..., None], 3, axis=2)):  # grey and RGB of the same picture
        pixels = processor(images=image)["pixel_values"][0]
        torch.testing.assert_close(pixels, ref.reference_pixels_integer_scale(grey), atol=0, rtol=0)


def test_processor_matches_opencv_on_other_sizes(reference_processor_folder):
    pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) runs the reference's own resize and Otsu")
    processor = CLEFTProcessor.from_pretrained(reference_processor_folder)
    rng = np.random.default_rng(5)
    for _ in range(4):
        grey = _image(int(rng.integers(100)))[: int(rng.integers(300, 512)), : int(rng.integers(250, 384))]
        difference = processor(images=grey)["pixel_values"][0] - ref.opencv_reference_pixels(grey)
        assert difference.abs().max() <= 2 / 255 + 1e-6 and (difference != 0).float().mean() < 1e-3


def test_stage1_matches_the_reference_forward(converted):
    folder, paths = converted
    state = _state(paths["stage1"])
    model = CLEFTModel.from_pretrained(folder / "converted1").eval()
    processor = CLEFTProcessor.from_pretrained(folder / "converted1")
    tokenizer = AutoTokenizer.from_pretrained(paths["llm"])
    images = [_image(1), _image(2)]
    pixels = processor(images=images)["pixel_values"]
    with torch.no_grad():
        inputs = processor(text=CAPTIONS[:2])
        ours_text = torch.nn.functional.normalize(
            model.get_text_features(inputs["input_ids"], inputs["attention_mask"]), dim=-1
        )
        ours_image = torch.nn.functional.normalize(model.get_image_features(pixels), dim=-1)
    expected_text = ref.text_embeddings(state, paths["llm"], tokenizer, CAPTIONS[:2])
    expected_image = ref.image_embeddings(state, pixels)
    assert (ours_text - expected_text).abs().max() < 1e-5
    assert (ours_image - expected_image).abs().max() < 1e-5
    # zero-shot with the reference's hand prompts: ("this is a chest x ray of a patient with " + class).lower()
    probs = model.zero_shot_classify(pixels, CLASSES, processor)
    prompts = [("this is a chest x ray of a patient with " + name).lower() for name in CLASSES]
    expected = ref.probabilities(state, expected_image, ref.text_embeddings(state, paths["llm"], tokenizer, prompts))
    assert (probs - expected).abs().max() < 1e-5
    assert model.config.logit_scale_max is None and model.logit_scale.exp().item() > 100  # unclamped
    card = (folder / "converted1" / "README.md").read_text()
    assert "Converted from the authors' checkpoint `stage1.ckpt`" in card and "arxiv.org/abs/2407.21011" in card
    assert "EMBED licence" in card and "not attending to itself" in card
    # the reference truncates a long caption at 64 tokens and pools index 0 (a bug); the converted model pools
    # the EOS after 63 caption tokens, i.e. the reference's first pad of the caption cut at 63 tokens
    long_ids = tokenizer(CAPTIONS[2], add_special_tokens=False)["input_ids"][:63]
    with torch.no_grad():
        inputs = processor(text=CAPTIONS[2:])
        ours_long = torch.nn.functional.normalize(
            model.get_text_features(**{k: inputs[k] for k in ("input_ids", "attention_mask")}), dim=-1
        )
    assert inputs["input_ids"].shape[1] == 64
    expected_long = ref.text_embeddings(state, paths["llm"], tokenizer, [tokenizer.decode(long_ids)])
    assert (ours_long - expected_long).abs().max() < 1e-5


def test_stage2_matches_the_reference_prompts(converted):
    folder, paths = converted
    state = _state(paths["stage2"])
    model = CLEFTModel.from_pretrained(folder / "converted2").eval()
    processor = CLEFTProcessor.from_pretrained(folder / "converted2")
    tokenizer = AutoTokenizer.from_pretrained(paths["llm"])
    pixels = processor(images=[_image(3), _image(4)])["pixel_values"]
    assert model.prompt_set_names() == ["findings"] and model.prompt_set("findings")[1] == CLASSES
    expected_classes = ref.prompt_class_embeddings(state, paths["llm"], tokenizer, CLASSES)
    with torch.no_grad():
        ours_classes = model.encode_class_prompts(use_learned_prompts=True, task="findings")
    assert (ours_classes - expected_classes).abs().max() < 1e-5
    probs = model.zero_shot_classify(pixels, use_learned_prompts=True, task="findings")
    expected = ref.probabilities(state, ref.image_embeddings(state, pixels), expected_classes)
    assert (probs - expected).abs().max() < 1e-5


def test_mlp_projection_checkpoint(tmp_path):
    paths = write_reference_checkpoints(tmp_path, dtype=torch.float32, projection_head="mlp")
    convert_original_checkpoint(paths["stage1"], tmp_path / "out", text_model_name_or_path=str(paths["llm"]))
    model = CLEFTModel.from_pretrained(tmp_path / "out").eval()
    processor = CLEFTProcessor.from_pretrained(tmp_path / "out")
    state = _state(paths["stage1"])
    tokenizer = AutoTokenizer.from_pretrained(paths["llm"])
    with torch.no_grad():
        inputs = processor(text=CAPTIONS[:2])
        ours = torch.nn.functional.normalize(
            model.get_text_features(inputs["input_ids"], inputs["attention_mask"]), dim=-1
        )
    assert model.config.projection_head == "mlp"
    assert (ours - ref.text_embeddings(state, paths["llm"], tokenizer, CAPTIONS[:2])).abs().max() < 1e-5


def _meta_layout(stage: int):
    return reference_state_dict(
        stage=stage,
        vision=REAL_VISION,
        text={"n_layer": 32, "n_embd": 2560, "n_positions": 1024},
        vocab_size=28896,
        projection_dim=512,
        device="meta",
    )


@pytest.mark.parametrize("stage", [1, 2])
def test_real_size_layout_maps_every_key(stage):
    state = _meta_layout(stage)
    layout = inspect_reference_state_dict(state)
    assert (layout.stage, layout.lora_rank, layout.lora_targets, layout.reference_image_size) == (
        stage,
        8,
        ["c_attn"],
        518,
    )
    assert layout.vision_kwargs["num_heads"] == 12 and layout.num_context_tokens == (30 if stage == 2 else None)
    config = reference_config(layout, GPT2Config(**BIOMEDLM_CONFIG), "stanford-crfm/BioMedLM")
    with torch.device("meta"):
        model = CLEFTModel(config)
    mapped, context = map_reference_state_dict(state, layout, model)
    prompts = prompt_learner_keys(model)
    wanted = {k: v.shape for k, v in model.state_dict().items() if k not in prompts}
    assert set(mapped) == set(wanted)
    assert all(mapped[k].shape == shape for k, shape in wanted.items())
    assert mapped["vision_model.pos_embed"].shape == (1, 256, 768)
    assert (context is not None) == (stage == 2)


def test_refused_files_end_in_one_line(tmp_path, capsys):
    paths = write_reference_checkpoints(tmp_path / "ref", dtype=torch.float32)
    llm = str(paths["llm"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(paths["stage1"].read_bytes()[:50_000])
    with pytest.raises(ConversionError, match="not a complete torch.save file"):
        convert_original_checkpoint(truncated, tmp_path / "o1", text_model_name_or_path=llm)
    code = tmp_path / "code.ckpt"  # a type no plain-dict checkpoint holds (weights_only refuses it)
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(llm_type="gpt")}, code)
    with pytest.raises(ConversionError, match=r"needs the type argparse.Namespace .*refused"):
        convert_original_checkpoint(code, tmp_path / "o2", text_model_name_or_path=llm)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(ConversionError, match="not a CLEFT checkpoint"):
        convert_original_checkpoint(other, tmp_path / "o3", text_model_name_or_path=llm)
    with pytest.raises(ConversionError, match="pass --class_names"):
        convert_original_checkpoint(paths["stage2"], tmp_path / "o4", text_model_name_or_path=llm, dataset="mydata")
    tokenizer = AutoTokenizer.from_pretrained(llm)
    tokenizer.add_tokens(["extratoken"])
    tokenizer.save_pretrained(llm)
    with pytest.raises(ConversionError, match="embedding has .* rows"):
        convert_original_checkpoint(paths["stage1"], tmp_path / "o5", text_model_name_or_path=llm)
    with pytest.raises(SystemExit) as exited:  # the command line: one line, exit code 2
        run_cli(
            main,
            ConvertArguments,
            argv=["--checkpoint", str(code), "--output_dir", str(tmp_path / "o6"), "--text_model_name_or_path", llm],
            config_file=False,
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: checkpoint "), lines


def test_saved_dtypes(reference_processor_folder, tmp_path):
    from safetensors import safe_open

    def dtypes(folder):
        with safe_open(str(folder / "model.safetensors"), "pt") as weights:
            return {
                name: weights.get_slice(name).get_dtype()
                for name in ("text_model.base_model.model.wte.weight", "vision_model.pos_embed", "logit_scale")
            }

    assert dtypes(reference_processor_folder) == {
        "text_model.base_model.model.wte.weight": "BF16",
        "vision_model.pos_embed": "F32",
        "logit_scale": "F32",
    }
    source = reference_processor_folder.parent
    convert_original_checkpoint(
        source / "stage1.ckpt", tmp_path / "fp32", text_model_name_or_path=str(source / "llm"), dtype="float32"
    )
    assert set(dtypes(tmp_path / "fp32").values()) == {"F32"}
