"""A converted authors' checkpoint is an ordinary cleft-hf model: stage 2 and evaluation through the scripts'
functions, adapter-only saving, the zero-shot pipeline; an EMBED-trained conversion is not pushed unasked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, GPT2Model, pipeline

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.arguments import load_arguments
from cleft_hf.conversion import ConversionError
from cleft_hf.convert_original_checkpoint import ConvertArguments, convert_original_checkpoint, main
from cleft_hf.demo.reference_checkpoint import write_reference_checkpoints
from cleft_hf.evaluation.arguments import EvaluateArguments
from cleft_hf.evaluation.runner import run_evaluation
from cleft_hf.training.config import PromptTuneArguments
from cleft_hf.training.prompt_tuning import run_prompt_tuning

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "cleft_hf" / "demo" / "demo.yaml"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    paths = write_reference_checkpoints(folder)
    for stage in (1, 2):
        convert_original_checkpoint(
            paths[f"stage{stage}"], folder / f"converted{stage}", text_model_name_or_path=str(paths["llm"])
        )
    return folder, paths


def test_stage2_training_on_a_converted_stage1_model(converted, demo_tree, tmp_path):
    folder, _ = converted
    args = load_arguments(
        PromptTuneArguments,
        DEMO_CONFIG,
        {
            "dataset": "synthetic",
            "data_root": str(demo_tree),
            "output_dir": str(tmp_path),
            "report_to": "none",
            "model_name_or_path": str(folder / "converted1"),
            "per_device_batch_size": 8,
            "max_steps": 2,
            "warmup_steps": 1,
            "eval_every": 0,
            "log_every": 1,
            "dataloader_num_workers": 0,
            "freeze_vision": False,
        },
        section="prompt_tune",
    )
    run_prompt_tuning(args)
    trained = CLEFTModel.from_pretrained(tmp_path / "model")
    assert trained.prompt_set_names() == ["findings"] and trained.config.text_pooling == "first_pad"
    assert trained.config.source_checkpoint == "stage1.ckpt" and trained.config.logit_scale_max is None


def test_evaluation_of_a_converted_stage2_model(converted, demo_tree, tmp_path):
    folder, _ = converted
    args = load_arguments(
        EvaluateArguments,
        DEMO_CONFIG,
        {
            "dataset": "synthetic",
            "data_root": str(demo_tree),
            "output_dir": str(tmp_path),
            "tasks": ["zero_shot"],
            "model_name_or_path": str(folder / "converted2"),
            "per_device_batch_size": 16,
            "dataloader_num_workers": 0,
        },
        section="evaluate",
    )
    results = run_evaluation(args)
    prompts = {r["setting"]["prompts"] for r in results["metrics"] if r["task"] == "zero_shot"}
    assert prompts == {"hand", "learned"}


def test_adapter_only_conversion_and_the_pipeline(converted, tmp_path):
    folder, paths = converted
    convert_original_checkpoint(
        paths["stage1"], tmp_path / "adapter", text_model_name_or_path=str(paths["llm"]), adapter_only=True
    )
    # the base LLM the adapter-only folder loads: the checkpoint's own frozen GPT-2 weights, saved as a Hub LLM
    full = CLEFTModel.from_pretrained(folder / "converted1").eval()
    llm = GPT2Model(full.config.text_config)
    base = full.text_model.get_base_model().state_dict()
    llm.load_state_dict({k.replace("base_layer.", ""): v for k, v in base.items() if "lora_" not in k})
    llm.save_pretrained(tmp_path / "llm")
    adapter = CLEFTModel.from_pretrained(tmp_path / "adapter", text_model_name_or_path=str(tmp_path / "llm")).eval()
    processor = CLEFTProcessor.from_pretrained(folder / "converted1")
    inputs = processor(text=["there is no edema"])
    with torch.no_grad():
        torch.testing.assert_close(
            adapter.get_text_features(inputs["input_ids"], inputs["attention_mask"]),
            full.get_text_features(inputs["input_ids"], inputs["attention_mask"]),
        )
    assert (tmp_path / "adapter" / "model.safetensors").stat().st_size < (
        folder / "converted1" / "model.safetensors"
    ).stat().st_size
    classifier = pipeline("zero-shot-image-classification", model=str(folder / "converted1"), trust_remote_code=True)
    image = np.random.default_rng(0).integers(0, 255, (300, 260), dtype=np.uint8)
    scores = classifier(
        image, candidate_labels=["edema", "cardiomegaly"], hypothesis_template=full.config.prompt_template
    )
    assert {s["label"] for s in scores} == {"edema", "cardiomegaly"}
    expected = full.zero_shot_classify(processor(images=image)["pixel_values"], ["edema", "cardiomegaly"], processor)
    assert abs(max(s["score"] for s in scores) - float(expected.max())) < 1e-5
    # a converted stage 2 through remote code (no cleft_hf needed): its learned prompts give the same scores
    pixels = processor(images=image)["pixel_values"]
    remote = AutoModel.from_pretrained(folder / "converted2", trust_remote_code=True).eval()
    local = CLEFTModel.from_pretrained(folder / "converted2").eval()
    torch.testing.assert_close(
        remote.zero_shot_classify(pixels, use_learned_prompts=True, task="findings"),
        local.zero_shot_classify(pixels, use_learned_prompts=True, task="findings"),
    )


def test_embed_trained_conversion_is_not_pushed_without_the_licence_flag(converted, tmp_path):
    _, paths = converted
    args = ConvertArguments(
        checkpoint=str(paths["stage2"]),
        output_dir=str(tmp_path / "out"),
        dataset="embed",
        class_names=["a", "b"],
        text_model_name_or_path=str(paths["llm"]),
        push_to_hub=True,
        hub_model_id="you/cleft-embed",
    )
    with pytest.raises(ConversionError, match="EMBED"):
        main(args)
    assert not (tmp_path / "out").exists()
