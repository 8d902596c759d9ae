"""CLEFT's text tower: a causal LLM or an encoder (BERT family), optionally cut to its first layers, adapted by
PEFT or trained whole (`peft_config: {peft_type: NONE}`, the CLIP baseline of the paper)."""

from __future__ import annotations

from typing import Any
import warnings

from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

NO_ADAPTER = "NONE"  # peft_type of a text tower trained whole, without an adapter


def is_encoder_config(text_config: PretrainedConfig) -> bool:
    """A bidirectional encoder (BERT, RoBERTa, DistilBERT, ModernBERT...): a masked-LM family used as an encoder,
    not as a decoder (`is_decoder`) and not an encoder-decoder (BART stays with the causal LMs)."""
    return (
        text_config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not text_config.is_encoder_decoder
        and not getattr(text_config, "is_decoder", False)
    )


def check_text_family(text_config: PretrainedConfig) -> None:
    """A text tower is a causal LM or an encoder; anything else ends in one line naming both."""
    if text_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not is_encoder_config(text_config):
        raise ValueError(
            f"text_config model_type {text_config.model_type!r} is neither a causal LM nor an encoder "
            "(masked-LM) family: use e.g. gpt2, llama, qwen2 or bert, roberta, distilbert"
        )


def text_layer_count(text_config: PretrainedConfig) -> int | None:
    """Number of transformer layers of a text config (`num_hidden_layers`, GPT-2's `n_layer`, DistilBERT's
    `n_layers`), None when the family names it otherwise."""
    for name in ("num_hidden_layers", "n_layers"):
        value = getattr(text_config, name, None)
        if isinstance(value, int):
            return value
    return None


def keep_first_layers(text_config: PretrainedConfig, num_layers: int | None) -> None:
    """Cut `text_config` to its first `num_layers` layers in place (the reference baseline: 6 of BERT's 12);
    `from_pretrained` with this config then loads only those layers' weights."""
    if num_layers is None:
        return
    have = text_layer_count(text_config)
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"text_num_layers must be a positive int, got {num_layers!r}")
    if have is None:
        raise ValueError(f"text_num_layers: cannot find the layer count of text_config ({text_config.model_type})")
    if num_layers > have:
        raise ValueError(
            f"text_num_layers={num_layers} is larger than the text model's {have} layers: "
            f"set it to at most {have} (or leave it out to keep them all)"
        )
    name = "num_hidden_layers" if hasattr(text_config, "num_hidden_layers") else "n_layers"
    setattr(text_config, name, num_layers)


def _encoder_kwargs(text_config: PretrainedConfig) -> dict[str, Any]:
    """No pooler for encoders that have one (BERT, RoBERTa): CLEFT pools the hidden states itself."""
    import inspect

    model_class = AutoModel._model_mapping[type(text_config)]
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}


def new_text_model(text_config: PretrainedConfig) -> nn.Module:
    """Randomly initialised base text model (no LM head, no pooler) from its config."""
    kwargs = _encoder_kwargs(text_config) if is_encoder_config(text_config) else {}
    return AutoModel.from_config(text_config, **kwargs)


def pretrained_text_model(
    source: str, text_config: PretrainedConfig | None = None, *, base_only: bool = False, **kwargs: Any
) -> nn.Module:
    """Pretrained base text model (no head, no pooler) of `source`; with `text_config` (a cut or encoder config)
    only the layers it describes are loaded. A causal LLM is loaded as a causal LM and its base model kept
    (`base_only`: straight as its base model)."""
    if text_config is not None:
        kwargs["config"] = text_config
        if is_encoder_config(text_config):
            return AutoModel.from_pretrained(source, **_encoder_kwargs(text_config), **kwargs)
    if base_only:
        return AutoModel.from_pretrained(source, **kwargs)
    return AutoModelForCausalLM.from_pretrained(source, **kwargs).base_model


def wrap_text_model(base_model: nn.Module, peft_config: Any | None) -> nn.Module:
    """The base model under PEFT (base frozen, adapter trainable), or, without a peft config, the base model
    itself, every parameter trainable."""
    from peft import get_peft_model  # imported when a model is built: a config alone does not load peft

    if peft_config is None:
        return base_model.requires_grad_(True)
    with warnings.catch_warnings():  # peft still reads transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # peft fixes fan_in_fan_out itself: GPT-2's Conv1D layers are Linear once quantised (text_quantization)
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to", category=UserWarning)
        return get_peft_model(base_model, peft_config)


def unwrapped_text_model(text_model: nn.Module) -> nn.Module:
    """The transformers model inside the tower (under PEFT's wrapper, or the tower itself)."""
    from peft import PeftModel

    return text_model.get_base_model() if isinstance(text_model, PeftModel) else text_model


def build_text_tower(config, base_model: nn.Module | None = None) -> nn.Module:
    """The LLM (or encoder) without its head, wrapped by PEFT (base weights frozen, adapter trainable), or
    trained whole with `peft_type: NONE`."""
    if base_model is None:
        base_model = new_text_model(config.text_config)
    return wrap_text_model(base_model, config.build_peft_config())


__all__ = [
    "NO_ADAPTER",
    "build_text_tower",
    "check_text_family",
    "is_encoder_config",
    "keep_first_layers",
    "new_text_model",
    "pretrained_text_model",
    "text_layer_count",
    "unwrapped_text_model",
    "wrap_text_model",
]
