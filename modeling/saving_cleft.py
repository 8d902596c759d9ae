"""Saving and loading of a CLEFT model: adapter-only folders, checked weights, the base LLM put back under
its adapters (re-quantised when the folder records `text_quantization`), older key layouts mapped."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from .configuration_cleft import CLEFTConfig
from .loading_cleft import base_llm_tensors, check_attn_implementation, check_local_folder, resolve_llm_dtype
from .prompt_sets_cleft import legacy_prompt_key_mapping
from .quantization_cleft import check_text_quantization, load_quantized_llm, put_quantized_base_llm
from .text_tower_cleft import build_text_tower, pretrained_text_model
from .weights_check_cleft import load_checked

# Checkpoints written before `logit_bias` moved out of the prompt learner (and `legacy_prompt_key_mapping`: before
# the prompt sets were one `ModuleDict`).
LEGACY_KEY_MAPPING = {r"^prompt_learner\.logit_bias$": "logit_bias"}
HUB_DOWNLOAD_KEYWORDS = (
    "cache_dir",
    "force_download",
    "proxies",
    "local_files_only",
    "token",
    "revision",
    "subfolder",
)


class CLEFTSavingMixin:
    """`save_pretrained` / `from_pretrained` of [`CLEFTModel`] (mixed in before `PreTrainedModel`)."""

    def should_save_base_model(self, save_base_model: bool | None = None) -> bool:
        """Full save below `adapter_only_threshold` LLM parameters, adapter-only above (unless told)."""
        choice = self.config.save_base_model if save_base_model is None else save_base_model
        if self.config.text_tower_trained:  # no frozen base model: the trained text tower is always saved
            if choice is False:
                raise ValueError(
                    "save_base_model=False (adapter-only) needs an adapter, but peft_type NONE trains "
                    "the whole text tower: leave save_base_model unset or true"
                )
            return True
        if choice is None:
            n_llm = sum(p.numel() for p in self.text_model.get_base_model().parameters())
            choice = n_llm < self.config.adapter_only_threshold and not self.config.text_quantization
        if choice and self.config.text_quantization:
            raise ValueError(
                "a CLEFT model with a quantised base LLM saves adapter-only (save_base_model=False): "
                "loading re-quantises the base LLM from text_model_name_or_path"
            )
        if not choice and not self.config.text_model_name_or_path:
            raise ValueError("adapter-only saving needs config.text_model_name_or_path to find the base LLM again")
        return bool(choice)

    def save_pretrained(self, save_directory, *args: Any, save_base_model: bool | None = None, **kwargs: Any):
        """`save_pretrained` (safetensors only); adapter-only mode leaves out the frozen base LLM weights."""
        kwargs.pop("safe_serialization", None)
        full = self.should_save_base_model(save_base_model)
        if not full:
            base_keys = set(self.base_llm_state_keys())
            state_dict = kwargs.pop("state_dict", None) or self.state_dict()
            kwargs["state_dict"] = {k: v for k, v in state_dict.items() if k not in base_keys}
        self.config.checkpoint_has_base_model = full
        model_class = next(c for c in type(self).__mro__ if c.__name__ == "CLEFTModel")
        if type(self) is not model_class:  # FSDP2 swapped in a class made in torch's module: the remote-code
            type(self).__module__ = model_class.__module__  # files copied are those of this class's module
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.checkpoint_has_base_model = True

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *args: Any,
        text_model_name_or_path=None,
        dtype=None,
        attn_implementation: str | None = None,
        text_quantization: dict | None = None,
        **kwargs,
    ):
        """Load a CLEFT model (safetensors only); adapter-only checkpoints fetch the base LLM from
        `config.text_model_name_or_path` or the `text_model_name_or_path` override.

        Weights missing, unexpected or of another shape than the config's model are an error naming them
        (`allow_partial_weights=True`: a warning; adapter-only folders lack the base LLM by design).
        `dtype` is the frozen base LLM's (default: bfloat16 on GPU, float32 on CPU; "auto": as saved); trainable
        parts load as float32. An adapter-only checkpoint's base LLM is loaded once and put under the adapters
        (no second copy in memory). `attn_implementation` as in `from_vision_text_pretrained`.
        `text_quantization` (a `BitsAndBytesConfig` mapping; `{}`: none) overrides the recorded one: an adapter-only
        checkpoint's base LLM is then loaded quantised from its original weights.
        """
        check_local_folder(pretrained_model_name_or_path)
        check_attn_implementation(attn_implementation)
        kwargs["use_safetensors"] = True
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        legacy = (
            {}
            if "key_mapping" in kwargs
            else {
                **LEGACY_KEY_MAPPING,
                **legacy_prompt_key_mapping(cls._saved_config(pretrained_model_name_or_path, kwargs)),
            }
        )
        kwargs.setdefault("key_mapping", legacy)
        allow_partial, with_info = kwargs.pop("allow_partial_weights", False), kwargs.pop("output_loading_info", False)
        loaded, info = load_checked(  # weights not covering the model: an error naming them (weights_check_cleft)
            lambda **checks: super(CLEFTSavingMixin, cls).from_pretrained(
                pretrained_model_name_or_path, *args, dtype=resolve_llm_dtype(dtype), **kwargs, **checks
            ),
            pretrained_model_name_or_path,
            allow_partial,
        )
        model = (loaded, info) if with_info else loaded
        if text_quantization is not None:
            loaded.config.text_quantization = check_text_quantization(text_quantization)
        if loaded.config.text_quantization and loaded.config.checkpoint_has_base_model:
            raise ValueError(
                "text_quantization needs an adapter-only checkpoint (its base LLM is quantised from its "
                "original weights): save this model with save_base_model=False first"
            )
        loaded._weight_conversions = [  # saving writes the current layout, not the older one it was read from
            c
            for c in getattr(loaded, "_weight_conversions", None) or []
            if not set(c.target_patterns) & set(legacy.values())
        ]
        if not loaded.config.checkpoint_has_base_model:
            source = text_model_name_or_path or loaded.config.text_model_name_or_path
            loaded.load_base_llm_weights(source, token=kwargs.get("token"))
            loaded.config.checkpoint_has_base_model = True
        for name, parameter in loaded.named_parameters():  # the loader makes every parameter trainable
            parameter.requires_grad_(name not in loaded._frozen_parameter_names)
            if parameter.requires_grad and parameter.dtype != torch.float32:  # missing keys built in `dtype`
                parameter.data = parameter.data.float()
        return model

    @classmethod
    def _saved_config(cls, pretrained_model_name_or_path, kwargs: dict[str, Any]) -> CLEFTConfig:
        """The config `from_pretrained` is about to use (`config=` or the folder's), read for the key mapping."""
        config = kwargs.get("config")
        if isinstance(config, PretrainedConfig):
            return config
        download = {k: kwargs[k] for k in HUB_DOWNLOAD_KEYWORDS if k in kwargs}
        return cls.config_class.from_pretrained(config or pretrained_model_name_or_path, **download)

    @torch.no_grad()
    def load_base_llm_weights(self, source: str, **hub_kwargs: Any) -> None:
        """Put the base LLM weights of `source` (Hub id or folder, safetensors) under the PEFT adapters.

        The LLM is loaded once by transformers, in this model's base dtype, and its tensors are moved in (not
        copied): peak memory is one LLM, not two.
        """
        hub_kwargs = {k: v for k, v in hub_kwargs.items() if v is not None}
        inner = self.text_model.get_base_model()
        dtype = next(inner.parameters()).dtype
        cut = self.config.text_num_layers is not None or self.config.text_is_encoder  # first layers, no pooler
        attn = getattr(inner.config, "_attn_implementation", None)
        try:
            if self.config.text_quantization:
                language_model = load_quantized_llm(
                    source,
                    self.config.text_quantization,
                    dtype=dtype,
                    attn_implementation=attn,
                    use_safetensors=True,
                    **hub_kwargs,
                )
            else:
                language_model = pretrained_text_model(
                    source,
                    inner.config if cut else None,
                    dtype=dtype,
                    attn_implementation=attn,
                    use_safetensors=True,
                    base_only=True,
                    **hub_kwargs,
                )
        except (OSError, ValueError) as error:
            raise OSError(
                f"cannot load the base LLM {source!r} needed by this adapter-only CLEFT checkpoint "
                f"(pass text_model_name_or_path=<local folder or Hub id> to from_pretrained): {error}"
            ) from error
        if self.config.text_quantization:  # a new PEFT tower around the quantised LLM, the adapters moved over
            return put_quantized_base_llm(self, language_model, lambda llm: build_text_tower(self.config, llm))
        source_tensors = {**dict(language_model.named_parameters()), **dict(language_model.named_buffers())}
        targets = base_llm_tensors(inner)
        missing = sorted(set(targets) - set(source_tensors))
        if missing:
            raise ValueError(f"base LLM {source!r} lacks weights this model needs: {missing[:5]}")
        for name, (module, attribute) in targets.items():
            tensor = source_tensors[name].detach()
            if attribute in module._parameters:
                module._parameters[attribute] = nn.Parameter(tensor, requires_grad=False)
            else:
                module._buffers[attribute] = tensor
        del language_model, source_tensors


__all__ = ["CLEFTSavingMixin"]
