"""`text_quantization`: the frozen base LLM in 4 or 8 bits (bitsandbytes on CPU), trained, saved adapter-only,
re-quantised on load (also as remote code), through both training stages with validation."""

from __future__ import annotations

import importlib.util
import json
import logging
import textwrap

from conftest import run_isolated, tiny_run_overrides
import pytest
from safetensors.torch import load_file
from tiny_models import TINY_VISION_MODEL, tiny_vision_kwargs
import torch

from cleft_hf import CLEFTConfig, CLEFTModel
from cleft_hf.modeling import quantization_cleft
from cleft_hf.modeling.quantization_cleft import check_text_quantization
from cleft_hf.training.optim import build_optimizer

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed (pip install 'cleft-hf[quantization]')")
NF4 = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_compute_dtype": "bfloat16",
}
INT8 = {"load_in_8bit": True}
QUANTIZED_CLASSES = {"nf4": ("Params4bit", torch.uint8), "int8": ("Int8Params", torch.int8)}


def _build(llm_folder, quantization, **fields) -> CLEFTModel:
    torch.manual_seed(0)
    return CLEFTModel.from_vision_text_pretrained(
        TINY_VISION_MODEL,
        str(llm_folder),
        vision_pretrained=False,
        text_quantization=quantization,
        vision_model_kwargs=tiny_vision_kwargs(),
        image_size=32,
        projection_dim=32,
        prompt_num_context_tokens=4,
        **fields,
    )


# ----------------------------------------------------------------------------- without bitsandbytes
def test_text_quantization_is_checked_and_stored_as_json():
    stored = check_text_quantization({**NF4, "bnb_4bit_compute_dtype": torch.bfloat16})
    assert stored == NF4 and json.dumps(stored)
    assert check_text_quantization({}) is None and check_text_quantization(None) is None
    for bad, message in (
        ({"load_in_4bit": True, "load_in_8bit": True}, "exactly one"),
        ({"bnb_4bit_quant_type": "nf4"}, "exactly one"),
        ({**NF4, "bnb_4bit_quant_type": "int4"}, "nf4"),
        ({**NF4, "load_in_4bits": True}, "unknown field"),
    ):
        with pytest.raises(ValueError, match=message):
            check_text_quantization(bad)
    config = CLEFTConfig(text_quantization=NF4)
    assert CLEFTConfig.from_dict(config.to_dict()).text_quantization == NF4
    assert config.peft_config["fan_in_fan_out"] is False  # bitsandbytes replaces GPT-2's Conv1D by Linear layers
    assert CLEFTConfig().peft_config["fan_in_fan_out"] is True


def test_missing_bitsandbytes_is_one_line_naming_the_extra(saved_llm, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        quantization_cleft.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install 'cleft-hf\[quantization\]'"):
        _build(saved_llm, NF4)


def test_bitsandbytes_hub_kernel_notice_is_dropped(caplog):
    """bitsandbytes logs on import (with AVX512-BF16 CPUs) that it could not fetch a kernel from the Hub."""
    cpu_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        cpu_logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
        cpu_logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


# ----------------------------------------------------------------------------- with bitsandbytes
@needs_bnb
@pytest.mark.parametrize("bits", ["nf4", "int8"])
def test_quantized_base_is_frozen_and_adapters_train_float32(saved_llm, tokenizer, processor, batch, bits):
    model = _build(saved_llm, NF4 if bits == "nf4" else INT8)
    quantized_class, storage = QUANTIZED_CLASSES[bits]
    classes = {}
    for name, parameter in model.named_parameters():
        classes.setdefault(type(parameter).__name__, set()).add((parameter.dtype, parameter.requires_grad))
        if parameter.requires_grad:
            assert parameter.dtype == torch.float32, name
            assert not name.startswith("text_model.") or "lora_" in name, name  # only the adapters of the LLM
        if name.startswith("text_model.") and ("norm" in name or ".ln_" in name):
            assert parameter.dtype == torch.float32 and not parameter.requires_grad, name
    assert classes[quantized_class] == {(storage, False)}
    assert quantization_cleft.has_quantized_weights(model.text_model)

    model.activation_checkpointing_enable()
    with torch.no_grad():  # validation first: bitsandbytes must not switch to its inference-only CPU kernel
        model.eval()(**batch)
    model.train()
    optimizer = build_optimizer(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss = model(**batch, return_loss=True).loss
    loss.backward()
    lora = [n for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(model.get_parameter(n).grad is not None for n in lora)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    optimizer.step()
    assert all(not torch.equal(before[n], model.get_parameter(n)) for n in lora)
    assert torch.isfinite(loss)


@needs_bnb
def test_adapter_only_round_trip_requantizes_and_full_saves_are_refused(
    saved_llm, tokenizer, processor, batch, tmp_path
):
    model = _build(saved_llm, NF4).eval()
    with torch.no_grad():
        expected = model(**batch).logits_per_image
    with pytest.raises(ValueError, match="saves adapter-only"):
        model.save_pretrained(tmp_path / "full", save_base_model=True)
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert config["text_quantization"] == NF4 and config["checkpoint_has_base_model"] is False
    assert not any(key in load_file(tmp_path / "adapter" / "model.safetensors") for key in model.base_llm_state_keys())

    loaded = CLEFTModel.from_pretrained(tmp_path / "adapter").eval()
    assert quantization_cleft.has_quantized_weights(loaded.text_model)
    assert all(p.dtype == torch.float32 for p in loaded.parameters() if p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, expected, atol=0, rtol=0)
        unquantized = CLEFTModel.from_pretrained(tmp_path / "adapter", text_quantization={}).eval()
        assert not quantization_cleft.has_quantized_weights(unquantized.text_model)
        assert not torch.equal(unquantized(**batch).logits_per_image, expected)  # NF4 rounding, same adapters

    unquantized.save_pretrained(tmp_path / "unquantized", save_base_model=False)
    requantized = CLEFTModel.from_pretrained(tmp_path / "unquantized", text_quantization=NF4).eval()
    with torch.no_grad():
        torch.testing.assert_close(requantized(**batch).logits_per_image, expected, atol=0, rtol=0)
    unquantized.save_pretrained(tmp_path / "with_base", save_base_model=True)
    with pytest.raises(ValueError, match="needs an adapter-only checkpoint"):
        CLEFTModel.from_pretrained(tmp_path / "with_base", text_quantization=NF4)


_LOAD_REMOTE = textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    folder, images = sys.argv[1], [Image.fromarray(image.numpy()) for image in torch.load(sys.argv[2])]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert any(type(p).__name__ == "Params4bit" for p in model.parameters())
    learned = model.zero_shot_classify(processor(images=images)["pixel_values"], use_learned_prompts=True)
    classifier = pipeline("zero-shot-image-classification", model=model, tokenizer=processor.tokenizer,
                          image_processor=processor.image_processor)
    rows = classifier(images, candidate_labels=["edema", "cardiomegaly"],
                      hypothesis_template=model.config.prompt_template)
    assert "cleft_hf" not in sys.modules
    torch.save({"learned": learned, "pipeline": [{r["label"]: r["score"] for r in row} for row in rows]}, sys.argv[3])
    """
)


@needs_bnb
def test_quantized_stage1_stage2_validation_and_remote_code(tmp_path, demo_tree, demo_llm):
    from test_training import DEMO_CONFIG

    from cleft_hf import CLEFTProcessor
    from cleft_hf.arguments import load_arguments
    from cleft_hf.training.config import PretrainArguments, PromptTuneArguments
    from cleft_hf.training.contrastive_pretraining import run_pretraining
    from cleft_hf.training.prompt_tuning import run_prompt_tuning

    overrides = {**tiny_run_overrides(demo_tree, demo_llm, tmp_path / "stage1"), "eval_every": 2, "save_every": 0}
    overrides["model_config"]["text_quantization"] = NF4
    stage1 = run_pretraining(load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain"))
    assert "zero_shot_acc" in json.dumps(stage1["validation"])
    stage2 = run_prompt_tuning(
        load_arguments(
            PromptTuneArguments,
            DEMO_CONFIG,
            {
                "dataset": "synthetic",
                "data_root": str(demo_tree),
                "output_dir": str(tmp_path / "stage2"),
                "report_to": "none",
                "model_name_or_path": stage1["model_dir"],
                "per_device_batch_size": 8,
                "max_steps": 4,
                "warmup_steps": 1,
                "num_context_tokens": 3,
                "log_every": 2,
                "eval_every": 2,
            },
            section="prompt_tune",
        )
    )
    assert "zero_shot_acc" in json.dumps(stage2["validation"])

    folder = tmp_path / "stage2" / "model"
    model, processor = CLEFTModel.from_pretrained(folder).eval(), CLEFTProcessor.from_pretrained(folder)
    assert model.config.text_quantization == NF4 and quantization_cleft.has_quantized_weights(model.text_model)
    images = torch.randint(0, 255, (2, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels = processor(images=[image.numpy() for image in images])["pixel_values"]
    learned = model.zero_shot_classify(pixels, use_learned_prompts=True)
    hand = model.zero_shot_classify(pixels, ["edema", "cardiomegaly"], processor)
    torch.save(images, tmp_path / "images.pt")
    result = run_isolated(tmp_path, _LOAD_REMOTE, str(folder), str(tmp_path / "images.pt"), str(tmp_path / "out.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(remote["learned"], learned, atol=1e-5, rtol=0)
    pipeline_scores = torch.tensor([[row["edema"], row["cardiomegaly"]] for row in remote["pipeline"]])
    torch.testing.assert_close(pipeline_scores, hand, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "quantization", [INT8, {**NF4, "bnb_4bit_quant_storage": "bfloat16"}], ids=["int8", "nf4-bf16"]
)
def test_fsdp2_refuses_what_it_cannot_shard_in_one_line(make_model, quantization):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from cleft_hf.training.config import ConfigError
    from cleft_hf.training.runner import prepare_run

    model = make_model(text_quantization=quantization)  # the config is what is checked: no weights loaded
    with pytest.raises(ConfigError, match="FSDP2") as refused:
        prepare_run(SimpleNamespace(distributed_type=DistributedType.FSDP), None, model, None, "project")
    assert "\n" not in str(refused.value)
    assert quantization_cleft.fsdp2_refusal(NF4) is None  # default uint8 storage: the 4-bit base stays whole


@needs_bnb
def test_fsdp2_with_a_4bit_base_trains_as_ddp(tmp_path, demo_tree, demo_llm):
    """accelerate keeps uint8-stored 4-bit weights out of FSDP2's sharding: each process holds the whole base."""
    import dataclasses

    from test_training_fsdp import DEMO_CONFIG, _launch, _losses

    from cleft_hf.arguments import load_arguments
    from cleft_hf.training.config import PretrainArguments

    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, tmp_path),
        "augment": False,
        "per_device_batch_size": 4,
        "max_steps": 2,
        "save_every": 0,
    }
    overrides["model_config"].update(peft_config={"peft_type": "LORA", "lora_dropout": 0.0}, text_quantization=NF4)
    args = load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain")
    for mode in ("ddp", "fsdp"):
        seen = _launch(mode, dataclasses.replace(args, output_dir=str(tmp_path / mode)), tmp_path / mode)
        assert seen["distributed_type"] == ("DistributedType.FSDP" if mode == "fsdp" else "DistributedType.MULTI_CPU")
    torch.testing.assert_close(_losses(tmp_path / "fsdp"), _losses(tmp_path / "ddp"), atol=1e-5, rtol=0)
    loaded = CLEFTModel.from_pretrained(tmp_path / "fsdp" / "model")
    assert quantization_cleft.has_quantized_weights(loaded.text_model)


@needs_bnb
def test_resume_with_a_4bit_base_is_exact(tmp_path, demo_tree, demo_llm):
    """`accelerator.save_state` holds the 4-bit base with its quantisation state; resuming loads it back."""
    import dataclasses

    from test_training import DEMO_CONFIG

    from cleft_hf.arguments import load_arguments
    from cleft_hf.training.config import PretrainArguments
    from cleft_hf.training.contrastive_pretraining import run_pretraining

    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, tmp_path / "whole"),
        "augment": False,
        "label_caption_prob": 0.0,
    }
    overrides["model_config"]["text_quantization"] = NF4
    args = load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain")
    whole = run_pretraining(args)
    run_pretraining(dataclasses.replace(args, output_dir=str(tmp_path / "cut"), max_steps=2))
    resumed = run_pretraining(
        dataclasses.replace(args, output_dir=str(tmp_path / "cut"), resume_from_checkpoint="latest")
    )
    assert resumed["loss_curve"] == whole["loss_curve"]
    weights = [load_file(tmp_path / run / "model" / "model.safetensors") for run in ("whole", "cut")]
    assert weights[0].keys() == weights[1].keys()
    for name, weight in weights[0].items():
        torch.testing.assert_close(weights[1][name], weight, atol=0, rtol=0, msg=name)
