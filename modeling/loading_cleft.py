"""Loading choices of a CLEFT model: the frozen LLM's dtype, its attention kernel, its weights under PEFT."""

from __future__ import annotations

import os

from peft.tuners.tuners_utils import BaseTunerLayer
import torch
from torch import nn
from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available


def default_llm_dtype() -> torch.dtype:
    """dtype of the frozen base LLM when none is given: bfloat16 on a GPU that has it, float32 otherwise."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def resolve_llm_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    """`None` -> `default_llm_dtype()`; a name ("bfloat16", "bf16", "float32"...) -> the torch dtype; "auto" stays."""
    if dtype is None:
        return default_llm_dtype()
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    names = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    resolved = names.get(str(dtype), getattr(torch, str(dtype), None))
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be bfloat16, float16, float32 or 'auto', got {dtype!r}")
    return resolved


def check_local_folder(name_or_path: str | os.PathLike) -> None:
    """A path that names no existing folder is a FileNotFoundError saying so (transformers would take it for a
    Hub id and answer about the repo id's form): an absolute path, `~`, `./`, `../`, two or more `/`, or a Path."""
    text = str(name_or_path)
    looks_local = (
        isinstance(name_or_path, os.PathLike)
        or os.path.isabs(text)
        or text.startswith((".", "~"))
        or text.count("/") > 1
        or "\\" in text
    )
    if looks_local and not os.path.isdir(os.path.expanduser(text)):
        where = os.path.abspath(os.path.expanduser(text))
        raise FileNotFoundError(f"model folder {text} does not exist" + (f" ({where})" if where != text else ""))


def check_attn_implementation(attn_implementation: str | None) -> None:
    """Fail early, in one line, for flash attention without the `flash-attn` package (transformers checks the rest)."""
    available = {"flash_attention_2": is_flash_attn_2_available, "flash_attention_3": is_flash_attn_3_available}
    if attn_implementation in available and not available[attn_implementation]():
        raise ImportError(
            f"attn_implementation={attn_implementation!r} needs a CUDA GPU and the flash-attn package "
            "(pip install flash-attn --no-build-isolation); use 'sdpa' (the default) or 'eager' otherwise"
        )


def base_llm_tensors(language_model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Parameters and buffers (non-persistent ones too) of a PEFT-wrapped LLM's base weights, adapters left out,
    as `{name in the plain LLM: (owning module, attribute)}` (PEFT's `base_layer.` removed from the names)."""
    tuners = [name for name, module in language_model.named_modules() if isinstance(module, BaseTunerLayer)]
    tensors = {}
    for module_name, module in language_model.named_modules():
        owner = next((t for t in tuners if module_name == t or module_name.startswith(t + ".")), None)
        if owner is not None and not module_name.startswith(owner + ".base_layer"):
            continue  # an adapter (LoRA A/B, IA3 vector...); only the wrapped `base_layer` is the LLM's
        for attribute in [*module._parameters, *module._buffers]:
            if getattr(module, attribute) is None:
                continue
            name = f"{module_name}.{attribute}" if module_name else attribute
            tensors[name.replace(".base_layer.", ".")] = (module, attribute)
    return tensors


__all__ = [
    "base_llm_tensors",
    "check_attn_implementation",
    "check_local_folder",
    "default_llm_dtype",
    "resolve_llm_dtype",
]
