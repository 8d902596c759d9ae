"""CLEFTConfig: defaults from the paper, exact serialisation, one clear error per bad field."""

from __future__ import annotations

import json
import math

import pytest

from cleft_hf import CLEFTConfig


def test_paper_defaults():
    config = CLEFTConfig()
    assert config.vision_model_name == "vit_base_patch14_reg4_dinov2.lvd142m"
    assert config.text_model_name_or_path == "stanford-crfm/BioMedLM"
    assert (config.text_config.n_layer, config.text_config.n_embd, config.text_config.vocab_size) == (32, 2560, 28896)
    assert config.peft_config == {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 32,
        "lora_dropout": 0.1,
        "target_modules": ["c_attn"],
        "fan_in_fan_out": True,
    }
    assert config.projection_dim == 512 and math.isclose(config.logit_scale_init_value, math.log(1 / 0.07))
    assert config.prompt_num_context_tokens == 30 and config.image_pooling == "mean"


def test_serialises_exactly(tmp_path):
    config = CLEFTConfig(
        text_config={
            "model_type": "llama",
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "vocab_size": 300,
        },
        prompt_sets={
            "findings": {
                "class_names": ["edema", "cardiomegaly"],
                "prompt_class_token_ids": [[5], [6, 7]],
                "prompt_num_context_tokens": 4,
                "prompt_class_specific": True,
            }
        },
        active_prompt_set="findings",
        prompt_class_specific=True,
        image_size=64,
        peft_config={"peft_type": "IA3"},
    )
    config.save_pretrained(tmp_path)
    loaded = CLEFTConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "cleft"
    assert loaded.peft_config["target_modules"] == ["k_proj", "v_proj", "down_proj"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("projection_dm", 1, "unknown field 'projection_dm': did you mean 'projection_dim'"),
        ("image_pooling", "max", "image_pooling must be"),
        ("projection_dim", 0, "projection_dim must be"),
        ("prompt_num_context_tokens", 0, "prompt_num_context_tokens must be"),
        ("prompt_template", "no placeholder", "prompt_template must contain"),
        ("prompt_sets", {"density": {"class_names": [], "prompt_class_token_ids": []}}, "class_names must be"),
        (
            "prompt_sets",
            {"density": {"class_names": ["fat", "fat"], "prompt_class_token_ids": [[1], [1]]}},
            "duplicates",
        ),
        ("prompt_sets", {"density": {"class_names": ["fat"], "prompt_class_token_ids": []}}, "one entry per class"),
        ("active_prompt_set", "density", "not in prompt_sets"),
        ("peft_config", {"peft_type": "BOFT"}, "peft_type must be one of"),
        ("peft_config", {"peft_type": "ADALORA"}, "invalid peft_config for ADALORA"),
        ("text_config", {"model_type": "vit"}, "neither a causal LM nor an encoder"),
    ],
)
def test_bad_field_gives_one_clear_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        CLEFTConfig(**{field: value})


def test_unknown_llm_family_needs_target_modules():
    family = {
        "model_type": "biogpt",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 300,
    }
    with pytest.raises(ValueError, match="unknown LLM family 'biogpt'.*target_modules"):
        CLEFTConfig(text_config=family)
    config = CLEFTConfig(text_config=family, peft_config={"peft_type": "LORA", "target_modules": ["q_proj"]})
    assert config.peft_config["target_modules"] == ["q_proj"] and config.peft_config["r"] == 8


def test_keys_of_a_newer_transformers_are_kept(tmp_path):
    CLEFTConfig().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "some_future_base_key": True}))
    assert CLEFTConfig.from_pretrained(tmp_path).some_future_base_key is True


@pytest.mark.parametrize(
    "keyword, message",
    [("image_pooler", "did you mean 'image_pooling'"), ("frobnicate", "unknown field 'frobnicate': its fields: ")],
)
def test_keywords_that_are_no_field_are_refused(keyword, message):
    with pytest.raises(ValueError, match=message):
        CLEFTConfig(**{keyword: "cls"})
    assert CLEFTConfig(
        output_hidden_states=True, attn_implementation="eager"
    ).output_hidden_states  # transformers' own
