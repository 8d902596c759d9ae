"""dtype and attention choices: a bf16 frozen base LLM with float32 trainable masters, save/load keeping dtypes,
flash attention failing in one line where flash-attn is missing, FSDP/device-map units."""

from __future__ import annotations

import pytest
from tiny_models import TINY_VISION_MODEL, tiny_vision_kwargs
import torch

from cleft_hf import CLEFTModel
from cleft_hf.modeling.loading_cleft import resolve_llm_dtype

DECODER_LAYER = {"gpt2": "GPT2Block", "llama": "LlamaDecoderLayer"}


def _from_llm(saved_llm, **kwargs):
    torch.manual_seed(0)
    return CLEFTModel.from_vision_text_pretrained(
        TINY_VISION_MODEL,
        str(saved_llm),
        vision_pretrained=False,
        vision_model_kwargs=tiny_vision_kwargs(),
        image_size=32,
        projection_dim=32,
        prompt_num_context_tokens=4,
        **kwargs,
    )


def _dtypes(model):
    """{parameter name: (dtype, requires_grad)}."""
    return {name: (p.dtype, p.requires_grad) for name, p in model.named_parameters()}


def _assert_bf16_frozen_fp32_trainable(model):
    base = set(model.base_llm_state_keys())
    for name, parameter in model.named_parameters():
        if name in base:
            assert parameter.dtype == torch.bfloat16 and not parameter.requires_grad, name
        else:  # vision tower, adapters, projections, logit scale, prompt context
            assert parameter.dtype == torch.float32, name
    assert any("lora_" in name and p.requires_grad for name, p in model.named_parameters())


def test_default_dtype_is_float32_on_cpu(saved_llm):
    assert resolve_llm_dtype(None) == torch.float32  # this machine has no GPU
    model = _from_llm(saved_llm)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bf16_base_llm_and_float32_trainable_parameters(saved_llm):
    model = _from_llm(saved_llm, dtype="bfloat16")
    _assert_bf16_frozen_fp32_trainable(model)
    assert model.vision_model.patch_embed.proj.weight.requires_grad


def test_bf16_forward_backward(saved_llm, batch):
    model = _from_llm(saved_llm, dtype=torch.bfloat16)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, return_loss=True).loss
    loss.backward()
    assert torch.isfinite(loss)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    for name, parameter in trainable:
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32, name
        assert torch.isfinite(parameter.grad).all(), name
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("save_base_model", [True, False], ids=["full", "adapter_only"])
def test_save_load_round_trip_keeps_dtypes(saved_llm, batch, tmp_path, save_base_model):
    model = _from_llm(saved_llm, dtype="bfloat16").eval()
    model.save_pretrained(tmp_path, save_base_model=save_base_model)
    loaded = CLEFTModel.from_pretrained(tmp_path, dtype="bfloat16").eval()
    assert _dtypes(loaded) == _dtypes(model)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, model(**batch).logits_per_image)


def test_from_pretrained_restores_the_frozen_set(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = CLEFTModel.from_pretrained(tmp_path)
    assert _dtypes(loaded) == _dtypes(model)


def test_flash_attention_without_flash_attn_is_one_line(model, saved_llm, tmp_path):
    model.save_pretrained(tmp_path)
    for load in (
        lambda: CLEFTModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2"),
        lambda: _from_llm(saved_llm, attn_implementation="flash_attention_2"),
    ):
        with pytest.raises(ImportError, match="flash-attn") as error:
            load()
        assert "\n" not in str(error.value) and "sdpa" in str(error.value)


def test_attn_implementation_reaches_the_llm(saved_llm, tmp_path):
    model = _from_llm(saved_llm, attn_implementation="eager")
    assert model.text_model.get_base_model().config._attn_implementation == "eager"
    model.save_pretrained(tmp_path)
    for attn in ("eager", "sdpa"):
        loaded = CLEFTModel.from_pretrained(tmp_path, attn_implementation=attn)
        assert loaded.text_model.get_base_model().config._attn_implementation == attn


def test_no_split_modules_name_llm_layer_and_vision_block(model, family, make_model):
    assert set(model._no_split_modules) == {DECODER_LAYER[family], "Block"}
    cnn = make_model(vision_model_name="resnet10t", vision_model_kwargs={})
    assert set(cnn._no_split_modules) == {DECODER_LAYER[family], "BasicBlock"}


def test_training_arguments_choose_dtype_and_attention(tmp_path, demo_tree, demo_llm):
    from conftest import tiny_run_overrides

    from cleft_hf.training.config import PretrainArguments
    from cleft_hf.training.contrastive_pretraining import build_model

    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, tmp_path),
        "dtype": "bfloat16",
        "attn_implementation": "eager",
        "gradient_checkpointing": False,
        "vision_pretrained": False,
    }
    model = build_model(PretrainArguments(**overrides))
    _assert_bf16_frozen_fp32_trainable(model)
    assert model.text_model.get_base_model().config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="config field 'dtype'"):
        PretrainArguments(**{**overrides, "dtype": "int8"})
