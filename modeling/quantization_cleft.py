"""The frozen base LLM in 4 or 8 bits (QLoRA-style): bitsandbytes through transformers' `BitsAndBytesConfig`.

`CLEFTConfig.text_quantization` is a `BitsAndBytesConfig` mapping, e.g. `{"load_in_4bit": True,
"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16"}` or
`{"load_in_8bit": True}`. transformers quantises the LLM's linear layers while loading its original weights (Hub
id or folder); PEFT puts its adapters on the quantised layers; everything trained stays float32. A checkpoint
of such a model is adapter-only and records the mapping, so loading it re-quantises the base LLM the same way.
bitsandbytes is optional (`pip install 'cleft-hf[quantization]'`) and imported only by the quantised load.
"""

from __future__ import annotations

from collections.abc import Callable
import importlib.util
import inspect
import logging
from typing import Any

from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

QUANTIZATION_INSTALL_HINT = "pip install 'cleft-hf[quantization]' (or pip install bitsandbytes)"
FOUR_BIT_TYPES = ("nf4", "fp4")
_DTYPE_FIELDS = ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage")
QUANTIZED_PARAMETER_CLASSES = ("Params4bit", "Int8Params")


# Where the notice is logged: bitsandbytes itself, and (transformers >= 5.25 installs `kernels`) the kernels package,
# which in offline mode first says it skips the publisher check of the kernel's repository.
HUB_KERNEL_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")


class _HubKernelNotice(logging.Filter):
    """Drops the notices about bitsandbytes' optional CPU kernel from the Hub (`kernels` package): peft imports
    bitsandbytes whenever it is installed, so they came on every import (offline: "skipping publisher trust check",
    then "failed to load"), and bitsandbytes then uses its own CPU code."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


def quiet_bitsandbytes_hub_kernel_notice() -> None:
    """Install `_HubKernelNotice` on the loggers that print it (before bitsandbytes is imported; idempotent)."""
    for name in HUB_KERNEL_LOGGERS:
        hub_logger = logging.getLogger(name)
        if not any(isinstance(f, _HubKernelNotice) for f in hub_logger.filters):
            hub_logger.addFilter(_HubKernelNotice())


quiet_bitsandbytes_hub_kernel_notice()


def _known_fields() -> list[str]:
    parameters = inspect.signature(BitsAndBytesConfig.__init__).parameters
    return [name for name in parameters if name not in ("self", "kwargs")]


def check_text_quantization(value: Any) -> dict[str, Any] | None:
    """`text_quantization` as a plain JSON mapping (dtypes as names), or None (full precision; also for `{}` and
    False). Raises ValueError (one line) for unknown fields, neither or both of 4 and 8 bits, an unknown 4-bit
    type."""
    if value is None or value is False or (isinstance(value, dict) and not value):
        return None
    if isinstance(value, BitsAndBytesConfig):
        defaults = BitsAndBytesConfig().to_dict()
        value = {k: v for k, v in value.to_dict().items() if k in _known_fields() and v != defaults.get(k)}
    if not isinstance(value, dict):
        raise ValueError(f"text_quantization must be a BitsAndBytesConfig mapping, got {value!r}")
    unknown = sorted(set(value) - set(_known_fields()))
    if unknown:
        raise ValueError(
            f"text_quantization has unknown field(s) {unknown}; BitsAndBytesConfig takes {_known_fields()}"
        )
    mapping = {
        k: str(v).removeprefix("torch.") if k in _DTYPE_FIELDS and v is not None else v for k, v in value.items()
    }
    if bool(mapping.get("load_in_4bit")) == bool(mapping.get("load_in_8bit")):
        raise ValueError("text_quantization needs exactly one of load_in_4bit: true or load_in_8bit: true")
    if mapping.get("load_in_4bit") and mapping.get("bnb_4bit_quant_type", "fp4") not in FOUR_BIT_TYPES:
        raise ValueError(
            f"text_quantization bnb_4bit_quant_type must be one of {FOUR_BIT_TYPES}, "
            f"got {mapping['bnb_4bit_quant_type']!r}"
        )
    try:
        BitsAndBytesConfig(**mapping)
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"invalid text_quantization: {error}") from None
    return mapping


def require_bitsandbytes() -> None:
    """One-line ImportError naming the extra when bitsandbytes is not installed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"text_quantization needs the bitsandbytes package: {QUANTIZATION_INSTALL_HINT}")


def quantized_load_kwargs(text_quantization: dict[str, Any] | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that load an LLM quantised (`{}` for full precision)."""
    if not text_quantization:
        return {}
    require_bitsandbytes()
    return {"quantization_config": BitsAndBytesConfig(**text_quantization)}


def prepare_quantized_llm(language_model: nn.Module) -> nn.Module:
    """Make a quantised LLM trainable under adapters:
    - peft's `prepare_model_for_kbit_training` casting where it matters: the (tiny) norm layers in float32;
      embeddings keep the load `dtype` (frozen lookups; float32 would double their memory);
    - no CPU inference repacking: on CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights in
      place at its first eval-mode forward, and from then on runs a kernel without input gradients, which
      would break training after a validation pass (the adapters of earlier layers get no gradient)."""
    for module in language_model.modules():
        if "norm" in type(module).__name__.lower():
            module.float()
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
        if type(getattr(module, "weight", None)).__name__ == "Params4bit":
            module._register_load_state_dict_pre_hook(_skip_saved_quant_state)
    return language_model


def _skip_saved_quant_state(state_dict: dict, prefix: str, *args: Any) -> None:
    """Loading a state dict (resuming from `accelerator.save_state`) into a 4-bit layer: its saved quantisation
    state (`weight.absmax`, `weight.quant_map`, ...) is that of the same weights, quantised the same way, which the
    layer already holds; bitsandbytes does not consume those keys, so they are left out here."""
    for key in [k for k in state_dict if k.startswith(prefix + "weight.")]:
        del state_dict[key]


def has_quantized_weights(module: nn.Module) -> bool:
    """True when `module` holds bitsandbytes 4- or 8-bit weights."""
    return any(type(p).__name__ in QUANTIZED_PARAMETER_CLASSES for p in module.parameters())


def load_quantized_llm(source: str, text_quantization: dict[str, Any], **load_kwargs: Any) -> nn.Module:
    """The causal LLM of `source` without its LM head, quantised while loaded, norms in float32."""
    causal_lm = AutoModelForCausalLM.from_pretrained(source, **quantized_load_kwargs(text_quantization), **load_kwargs)
    return prepare_quantized_llm(causal_lm.base_model)


def fsdp2_refusal(text_quantization: dict[str, Any] | None) -> str | None:
    """Why FSDP2 cannot train with this quantised base LLM (None: it can). With the default uint8 storage of 4-bit
    weights accelerate leaves them out of sharding (each GPU holds the whole 4-bit base; the rest is sharded)."""
    if not text_quantization:
        return None
    if text_quantization.get("load_in_8bit"):
        return (
            "text_quantization load_in_8bit does not train under FSDP2 (accelerate keeps only 4-bit weights out "
            "of sharding, and FSDP2 cannot shard the int8 ones): use DDP (multi-GPU without FSDP) or load_in_4bit"
        )
    storage = text_quantization.get("bnb_4bit_quant_storage") or "uint8"
    if storage != "uint8":
        return (
            f"bnb_4bit_quant_storage={storage} makes FSDP2 shard the packed 4-bit weights as plain float tensors, "
            "which a mixed-precision all-gather casts and 16-bit storage exposes to NaN canonicalisation "
            "(bitsandbytes issue 1945): leave it at uint8 (each GPU then holds the whole 4-bit base, FSDP2 "
            "shards the rest) or use DDP"
        )
    return None


def put_quantized_base_llm(model: nn.Module, language_model: nn.Module, build_tower: Callable) -> None:
    """Replace `model.text_model` (loaded unquantised, base weights not yet loaded) by `build_tower(language_model)`
    around the quantised LLM, carrying over its loaded adapter tensors (and prompt encoder)."""
    base_keys = set(model.base_llm_state_keys())
    adapters = {k: v for k, v in model.state_dict().items() if k.startswith("text_model.") and k not in base_keys}
    model.text_model = build_tower(language_model)
    quantized_base = set(model.base_llm_state_keys())
    expected = {k for k in model.state_dict() if k.startswith("text_model.") and k not in quantized_base}
    if expected != set(adapters):
        raise ValueError(f"adapter weights do not fit the quantised LLM: {sorted(expected ^ set(adapters))[:5]}")
    model.load_state_dict(adapters, strict=False)


__all__ = [
    "QUANTIZATION_INSTALL_HINT",
    "check_text_quantization",
    "fsdp2_refusal",
    "has_quantized_weights",
    "load_quantized_llm",
    "prepare_quantized_llm",
    "put_quantized_base_llm",
    "quantized_load_kwargs",
    "quiet_bitsandbytes_hub_kernel_notice",
    "require_bitsandbytes",
]
