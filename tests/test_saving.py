"""Saving and loading: full and adapter-only checkpoints, safetensors only, trust_remote_code in isolation."""

from __future__ import annotations

import json
import textwrap

from conftest import run_isolated
import pytest
from safetensors.torch import load_file
from tiny_models import TINY_VISION_MODEL, tiny_vision_kwargs
import torch

from cleft_hf import CLEFTModel


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits_per_image


def _weights(folder):
    files = sorted(folder.glob("*.safetensors"))
    assert files and not list(folder.glob("*.bin")), "safetensors only"
    state = {}
    for file in files:
        state.update(load_file(file))
    return state


def _from_llm(saved_llm, **config):
    torch.manual_seed(0)
    return CLEFTModel.from_vision_text_pretrained(
        TINY_VISION_MODEL,
        str(saved_llm),
        vision_pretrained=False,
        vision_model_kwargs=tiny_vision_kwargs(),
        image_size=32,
        projection_dim=32,
        prompt_num_context_tokens=4,
        **config,
    )


def test_full_round_trip_identical_logits(model, batch, processor, tmp_path):
    model.set_prompt_classes(["edema", "cardiomegaly"], processor)
    model.initialize_prompt_context(processor)
    model.save_pretrained(tmp_path)
    assert "text_model.base_model.model" in " ".join(_weights(tmp_path))
    loaded = CLEFTModel.from_pretrained(tmp_path)
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.prompt_learner.ctx, model.prompt_learner.ctx)
    assert loaded.config.class_names == ["edema", "cardiomegaly"]
    for field in ("peft_config", "prompt_class_token_ids", "projection_dim", "vision_model_kwargs", "image_pooling"):
        assert getattr(loaded.config, field) == getattr(model.config, field), field


def test_from_vision_text_pretrained_uses_the_llm_weights(saved_llm):
    from transformers import AutoModelForCausalLM

    model = _from_llm(saved_llm)
    reference = AutoModelForCausalLM.from_pretrained(saved_llm).base_model.state_dict()
    inner = model.text_model.get_base_model().state_dict()
    for key, value in reference.items():
        mine = inner.get(
            key, inner.get(key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias"))
        )
        assert mine is not None, key
        torch.testing.assert_close(mine, value)
    assert model.config.text_model_name_or_path == str(saved_llm)


def test_adapter_only_round_trip(saved_llm, batch, processor, tmp_path):
    model = _from_llm(saved_llm)
    with torch.no_grad():  # make the adapter non-trivial so a lost adapter would show
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    model.set_prompt_classes(["edema", "cardiomegaly"], processor)
    out = tmp_path / "adapter_only"
    model.save_pretrained(out, save_base_model=False)
    saved = _weights(out)
    base_keys = set(model.base_llm_state_keys())
    assert base_keys and not base_keys & set(saved)
    assert any("lora_A" in key for key in saved) and "prompt_sets._unnamed.ctx" in saved
    assert json.loads((out / "config.json").read_text())["checkpoint_has_base_model"] is False
    loaded = CLEFTModel.from_pretrained(out)
    assert loaded.config.checkpoint_has_base_model is True
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=1e-6, rtol=0)


def test_adapter_only_with_override_and_unreachable_base(saved_llm, batch, tmp_path):
    model = _from_llm(saved_llm)
    out = tmp_path / "adapter_only"
    model.save_pretrained(out, save_base_model=False)
    config = json.loads((out / "config.json").read_text())
    config["text_model_name_or_path"] = str(tmp_path / "moved-away")
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match="cannot load the base LLM"):
        CLEFTModel.from_pretrained(out)
    loaded = CLEFTModel.from_pretrained(out, text_model_name_or_path=str(saved_llm))
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=1e-6, rtol=0)


def test_save_mode_defaults_to_size_threshold(saved_llm):
    model = _from_llm(saved_llm)
    assert model.should_save_base_model() is True  # a tiny LLM is saved in full
    model.config.adapter_only_threshold = 10
    assert model.should_save_base_model() is False
    model.config.text_model_name_or_path = None
    with pytest.raises(ValueError, match="text_model_name_or_path"):
        model.should_save_base_model()


ISOLATED = textwrap.dedent(
    """
    import torch
    from transformers import AutoModel, AutoProcessor
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert "cleft_hf" not in sys.modules and type(model).__module__.startswith("transformers_modules")
    batch = processor(text=["no edema", "cardiomegaly"], images=[torch.zeros(40, 40), torch.ones(40, 40)])
    with torch.no_grad():
        logits = model(**batch).logits_per_image
        learned = model.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True)
    torch.save({"logits": logits, "learned": learned}, sys.argv[2])
    """
)


def test_trust_remote_code_without_cleft_hf(model, processor, tmp_path):
    model.set_prompt_classes(["edema", "cardiomegaly"], processor)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_cleft.CLEFTModel"
    for name in ("configuration_cleft.py", "modeling_cleft.py", "processing_cleft.py", "image_processing_cleft.py"):
        assert (tmp_path / "model" / name).exists(), name
    result = run_isolated(tmp_path, ISOLATED, tmp_path / "model", tmp_path / "out.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    model.eval()
    batch = processor(text=["no edema", "cardiomegaly"], images=[torch.zeros(40, 40), torch.ones(40, 40)])
    with torch.no_grad():
        # another interpreter (other thread count): logits x logit_scale (~14) differ in the 6th decimal
        torch.testing.assert_close(got["logits"], model(**batch).logits_per_image, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            got["learned"],
            model.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True),
            atol=1e-5,
            rtol=0,
        )
