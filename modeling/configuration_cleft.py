"""Configuration of CLEFT: a timm vision tower, a PEFT-adapted causal LLM text tower, projections, prompts."""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import difflib
import functools
import math
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .pooling_cleft import ENCODER_POOLINGS, TEXT_POOLINGS
from .projection_cleft import PROJECTION_HEADS
from .prompt_sets_cleft import LEGACY_PROMPT_FIELDS, UNNAMED_PROMPT_SET, check_prompt_sets, fold_legacy_prompt_fields
from .quantization_cleft import check_text_quantization
from .text_tower_cleft import NO_ADAPTER, check_text_family, is_encoder_config, keep_first_layers

DEFAULT_VISION_MODEL = "vit_base_patch14_reg4_dinov2.lvd142m"
DEFAULT_TEXT_MODEL = "stanford-crfm/BioMedLM"
DEFAULT_PROMPT_TEMPLATE = "this is a chest x ray of a patient with {}"
DEFAULT_PROMPT_INIT_TEXT = DEFAULT_PROMPT_TEMPLATE.replace("{}", "").strip()
# stanford-crfm/BioMedLM (GPT-2 family, 2.7 B): the paper's default text tower.
BIOMEDLM_CONFIG = {
    "n_layer": 32,
    "n_embd": 2560,
    "n_head": 20,
    "n_positions": 1024,
    "vocab_size": 28896,
    "bos_token_id": 28895,
    "eos_token_id": 28895,
}
# config.json entry that makes transformers' `pipeline()` load CLEFT's zero-shot pipeline from the model's files.
CUSTOM_PIPELINES = {
    "zero-shot-image-classification": {
        "impl": "pipeline_cleft.CLEFTZeroShotImageClassificationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "default": {},
        "type": "multimodal",
    }
}
SUPPORTED_PEFT_TYPES = ("LORA", "IA3", "PREFIX_TUNING", "ADALORA", NO_ADAPTER)
DEFAULT_LORA = {"peft_type": "LORA", "r": 8, "lora_alpha": 32, "lora_dropout": 0.1}

# Set while a config is read from a file (`from_dict`): unknown keys there are kept (a newer version's fields).
_READING_SAVED_CONFIG = contextvars.ContextVar("reading_saved_cleft_config", default=False)
# Keywords transformers' `PretrainedConfig.__post_init__` consumes besides its own fields.
_BASE_CONFIG_KEYWORDS = (
    "name_or_path",
    "attn_implementation",
    "experts_implementation",
    "output_attentions",
    "torch_dtype",
    "num_labels",
    "per_layer_config",
    "rope_scaling",
    "rope_theta",
    "_commit_hash",
    "model_type",
    "auto_map",
)


@functools.cache
def transformers_config_keys() -> frozenset[str]:
    """The keywords transformers' own `PretrainedConfig` accepts (its fields, what its `__post_init__` reads,
    the generation parameters it drops)."""
    from transformers import GenerationConfig

    return frozenset(
        {f.name for f in dataclasses.fields(PretrainedConfig)}
        | set(_BASE_CONFIG_KEYWORDS)
        | set(GenerationConfig._get_default_generation_params())
        | set(PretrainedConfig().to_dict())  # what `to_dict()` writes (`_name_or_path`, `transformers_version`)
    )


def _default_target_modules(peft_type: str, family: str) -> dict[str, Any]:
    """peft's default target (and IA3 feed-forward) modules for an LLM family; {} when peft has none."""
    from peft.utils import constants

    if peft_type == "PREFIX_TUNING":
        return {}
    table = {
        "LORA": constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
        "ADALORA": constants.TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING,
        "IA3": constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    }[peft_type]
    if family not in table:
        return {}
    defaults = {"target_modules": list(table[family])}
    if peft_type == "IA3":
        defaults["feedforward_modules"] = list(
            constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[family]
        )
    return defaults


class CLEFTConfig(PretrainedConfig):
    r"""Configuration of a [`CLEFTModel`].

    Args:
        vision_model_name (`str`): timm model name of the image encoder (weights are not loaded from the config).
        vision_pretrained_source (`str`): where the vision tower's initial weights came from (timm's Hub id),
            set by `from_vision_text_pretrained(vision_pretrained=True)`; None for a tower trained from scratch.
        vision_model_kwargs (`dict`): extra `timm.create_model` kwargs (e.g. `in_chans`, `drop_path_rate`).
        image_size (`int`): input resolution given to timm as `img_size`.
        image_pooling (`str`): `"mean"` of all final tokens before the last LayerNorm (paper) or `"cls"`.
        text_config (`dict` or `PretrainedConfig`): full config of a causal LM (GPT-2, Llama, Qwen2, ...) or of
            an encoder (BERT, RoBERTa, DistilBERT, ...: the CLIP baseline's text tower).
        text_model_name_or_path (`str`): where the LLM base weights come from (Hub id or local folder).
        text_num_layers (`int`): keep only the first N layers of the text model (the reference's BERT baseline:
            6); written into `text_config`, so a saved config describes the cut model.
        peft_config (`dict`): PEFT config (`peft_type` LORA, IA3, PREFIX_TUNING or ADALORA); default LoRA r=8,
            alpha=32, dropout=0.1 on peft's default target modules for the LLM family. `{peft_type: NONE}`
            trains the whole text tower without an adapter (the BERT CLIP baseline).
        projection_dim (`int`): size of the shared image-text space.
        projection_head (`str`): both towers' projection, `"linear"` (paper, `--linear_proj`) or `"mlp"` (the
            reference's MLP head: Linear -> 2048, BatchNorm, ReLU, Linear, BatchNorm without affine; per-process
            BatchNorm statistics).
        projection_bias (`bool`): linear projections with a bias (the reference's checkpoints have one).
        text_pooling (`str`): text feature, `"last"` (the appended EOS, attending to itself) or `"first_pad"` (the
            reference's: that EOS as the first padding token, not attending to itself); see `pooling_cleft`.
            Encoders take `"cls"` (their [CLS] token) or `"mean"` (of the attended tokens, causal LLMs too). Left
            out: `"cls"` for an encoder, `"last"` for a causal LLM (the resolved value is saved).
        logit_scale_init_value (`float`): initial log of the inverse temperature, log(1/0.07).
        logit_bias_init_value (`float`): initial bias added to the scaled similarities (SigLIP uses -10).
        logit_scale_max (`float`): clamp of `exp(logit_scale)` in `similarity_logits` (CLIP's 100); None: no clamp
            (the reference code's).
        prompt_num_context_tokens (`int`): number of learned context tokens of a new prompt set (stage 2).
        prompt_init_text (`str`): text whose token embeddings initialise the context (repeated to fill it).
        prompt_class_specific (`bool`): one context per class instead of one shared context (a new set).
        prompt_template (`str`): hand-written zero-shot prompt with `{}` for the class name (the training data's).
        modality (`str`): imaging modality of the training data as a Hub tag (`"chest-x-ray"`, `"mammography"`).
        hand_prompts (`dict`): the dataset's paper prompts, `{task: {class name: prompt}}` (e.g. EMBED density).
        prompt_sets (`dict`): every learned prompt set (`model.prompt_sets`), `{task: {"class_names",
            "prompt_class_token_ids", "prompt_num_context_tokens", "prompt_class_specific"}}` (set by
            `setup_prompt_learning` / `set_prompt_classes`), chosen with `task=` at inference.
        active_prompt_set (`str`): the set used when no `task` is given (the last one set up).
        custom_pipelines (`dict`): transformers' custom pipeline entry of CLEFT's zero-shot pipeline.
        save_base_model (`bool`): save the LLM base weights; `None` = only below `adapter_only_threshold`.
        adapter_only_threshold (`int`): LLM parameter count from which saving is adapter-only by default.
        checkpoint_has_base_model (`bool`): written by `save_pretrained`; False for adapter-only checkpoints.
        source_checkpoint (`str`): the authors' checkpoint this model was converted from
            (`cleft_hf.convert_original_checkpoint`).
        text_quantization (`dict`): `BitsAndBytesConfig` fields loading the frozen base LLM in 4 bits (NF4/FP4,
            double quant, compute dtype) or 8 bits (bitsandbytes); None: unquantised. Such models save adapter-only.
    """

    model_type = "cleft"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2", init_kwargs=BIOMEDLM_CONFIG)
    }

    vision_model_name: str = DEFAULT_VISION_MODEL
    vision_pretrained_source: str | None = None
    vision_model_kwargs: dict | None = None
    image_size: int = 224
    image_pooling: str = "mean"
    text_config: dict | PretrainedConfig | None = None
    text_model_name_or_path: str | None = DEFAULT_TEXT_MODEL
    text_num_layers: int | None = None
    peft_config: dict | None = None
    projection_dim: int = 512
    projection_head: str = "linear"
    projection_bias: bool = False
    text_pooling: str | None = None
    logit_scale_init_value: float = math.log(1 / 0.07)
    logit_bias_init_value: float = 0.0
    logit_scale_max: float | None = 100.0
    prompt_num_context_tokens: int = 30
    prompt_init_text: str | None = DEFAULT_PROMPT_INIT_TEXT
    prompt_class_specific: bool = False
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    modality: str | None = None
    hand_prompts: dict | None = None
    prompt_sets: dict | None = None
    active_prompt_set: str | None = None
    custom_pipelines: dict | None = None
    save_base_model: bool | None = None
    adapter_only_threshold: int = 500_000_000
    checkpoint_has_base_model: bool = True
    source_checkpoint: str | None = None
    text_quantization: dict | None = None

    def __post_init__(self, **kwargs: Any):
        legacy = {field: kwargs.pop(field) for field in LEGACY_PROMPT_FIELDS if field in kwargs}
        fold_legacy_prompt_fields(self, legacy, from_disk=_READING_SAVED_CONFIG.get())
        if not _READING_SAVED_CONFIG.get():  # a keyword that is no field would be kept silently and do nothing
            unknown = sorted(set(kwargs) - transformers_config_keys())
            if unknown:
                own = self.field_names()
                close = difflib.get_close_matches(unknown[0], own, n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"its fields: {', '.join(own)}"
                raise ValueError(f"CLEFTConfig got unknown field {unknown[0]!r}: {hint}")
        if isinstance(self.text_config, dict) and "model_type" not in self.text_config:
            raise ValueError("text_config needs a 'model_type' (e.g. 'gpt2', 'llama')")
        super().__post_init__(**kwargs)
        self.vision_model_kwargs = dict(self.vision_model_kwargs or {})
        self.custom_pipelines = self.custom_pipelines or copy.deepcopy(CUSTOM_PIPELINES)
        self._validate()
        keep_first_layers(self.text_config, self.text_num_layers)
        self.text_quantization = check_text_quantization(self.text_quantization)
        self.peft_config = self._resolve_peft_config(self.peft_config)

    @classmethod
    def field_names(cls) -> list[str]:
        """CLEFT's own fields (the class annotations; transformers' base fields left out)."""
        return [name for name in cls.__annotations__ if not name.startswith("_")]

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """As transformers' (a saved config.json): keys this version does not know are kept, not refused."""
        token = _READING_SAVED_CONFIG.set(True)
        try:
            return super().from_dict(config_dict, **kwargs)
        finally:
            _READING_SAVED_CONFIG.reset(token)

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        if self.image_pooling not in ("mean", "cls"):
            raise ValueError(f"image_pooling must be 'mean' or 'cls', got {self.image_pooling!r}")
        if self.projection_head not in PROJECTION_HEADS:
            raise ValueError(f"projection_head must be one of {PROJECTION_HEADS}, got {self.projection_head!r}")
        if not isinstance(self.projection_bias, bool):
            raise ValueError(f"projection_bias must be true or false, got {self.projection_bias!r}")
        if self.logit_scale_max is not None and not self.logit_scale_max > 0:
            raise ValueError(f"logit_scale_max must be positive or None (no clamp), got {self.logit_scale_max!r}")
        if self.text_pooling is None:
            self.text_pooling = "cls" if self.text_is_encoder else "last"
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLINGS}, got {self.text_pooling!r}")
        if (self.text_pooling in ENCODER_POOLINGS) != self.text_is_encoder and self.text_pooling != "mean":
            kind, allowed = (
                ("an encoder", ENCODER_POOLINGS)
                if self.text_is_encoder
                else ("a causal LLM", ("last", "first_pad", "mean"))
            )
            raise ValueError(
                f"text_pooling={self.text_pooling!r} does not fit {kind} text tower "
                f"({self.text_config.model_type}): use one of {allowed}"
            )
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if not isinstance(self.projection_dim, int) or self.projection_dim <= 0:
            raise ValueError(f"projection_dim must be a positive int, got {self.projection_dim!r}")
        if not isinstance(self.prompt_num_context_tokens, int) or self.prompt_num_context_tokens < 1:
            raise ValueError(f"prompt_num_context_tokens must be >= 1, got {self.prompt_num_context_tokens!r}")
        if "{}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{}}' for the class name, got {self.prompt_template!r}")
        check_prompt_sets(self)
        check_text_family(self.text_config)

    def _resolve_peft_config(self, peft_config: Any) -> dict[str, Any]:
        """Normalise to a plain dict with `peft_type` and explicit target modules (checked by peft itself)."""
        from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftConfig

        if isinstance(peft_config, PeftConfig):
            peft_config = {k: v for k, v in peft_config.to_dict().items() if v is not None}
        if peft_config is not None and not isinstance(peft_config, dict):
            raise ValueError(f"peft_config must be a mapping such as {{peft_type: LORA, r: 8}}, got {peft_config!r}")
        resolved = dict(DEFAULT_LORA if peft_config is None else peft_config)
        peft_type = str(resolved.get("peft_type", "LORA")).upper().replace("PEFTTYPE.", "")
        if peft_type == "LORA":  # the paper's LoRA defaults fill what the user left out
            resolved = {**DEFAULT_LORA, **resolved}
        if peft_type not in SUPPORTED_PEFT_TYPES:
            raise ValueError(f"peft_config peft_type must be one of {SUPPORTED_PEFT_TYPES}, got {peft_type!r}")
        if peft_type == NO_ADAPTER:  # the whole text tower trains: nothing else to configure
            extra = sorted(set(resolved) - {"peft_type"})
            if extra:
                raise ValueError(
                    f"peft_config with peft_type NONE (whole text tower trained) takes no other field, "
                    f"got {extra}: drop them, or choose an adapter (e.g. peft_type LORA)"
                )
            return {"peft_type": NO_ADAPTER}
        resolved["peft_type"] = peft_type
        family = self.text_config.model_type
        if peft_type != "PREFIX_TUNING" and not resolved.get("target_modules"):
            defaults = _default_target_modules(peft_type, family)
            if not defaults:
                raise ValueError(
                    f"unknown LLM family {family!r} for {peft_type}: set peft_config['target_modules'] explicitly"
                    + (" (or peft_type NONE to train the whole encoder)" if self.text_is_encoder else "")
                )
            resolved = {**defaults, **{k: v for k, v in resolved.items() if v is not None}}
        if family == "gpt2" and peft_type in ("LORA", "ADALORA", "IA3"):
            # GPT-2 uses Conv1D (transposed) layers, which quantisation replaces by bitsandbytes' Linear layers
            resolved.setdefault("fan_in_fan_out", not self.text_quantization)
        if isinstance(resolved.get("target_modules"), (set, tuple)):
            resolved["target_modules"] = sorted(resolved["target_modules"])
        resolved.pop("task_type", None)
        resolved.pop("base_model_name_or_path", None)
        kwargs = {k: v for k, v in resolved.items() if k != "peft_type"}
        try:  # let peft validate every field once, here, with its own message
            PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](task_type="FEATURE_EXTRACTION", **kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"invalid peft_config for {peft_type}: {error}") from error
        return resolved

    # ----------------------------------------------------------------- the active prompt set (read-only views)
    @property
    def prompt_task(self) -> str | None:
        """Name of the active learned prompt set (None when it has none or there is no set)."""
        return None if self.active_prompt_set == UNNAMED_PROMPT_SET else self.active_prompt_set

    @property
    def class_names(self) -> list[str] | None:
        """Classes of the active learned prompt set (None without one)."""
        return (self.prompt_sets or {}).get(self.active_prompt_set, {}).get("class_names")

    @property
    def prompt_class_token_ids(self) -> list[list[int]] | None:
        """Tokenised class names of the active learned prompt set (None without one)."""
        return (self.prompt_sets or {}).get(self.active_prompt_set, {}).get("prompt_class_token_ids")

    # ----------------------------------------------------------------- helpers used by the model
    @property
    def text_is_encoder(self) -> bool:
        """The text tower is a bidirectional encoder (BERT family), not a causal LLM."""
        return is_encoder_config(self.text_config)

    @property
    def text_tower_trained(self) -> bool:
        """The whole text tower trains (peft_type NONE): no frozen base model, no adapter."""
        return self.peft_config["peft_type"] == NO_ADAPTER

    def build_peft_config(self):
        """A fresh `peft.PeftConfig` (task type FEATURE_EXTRACTION: the LLM is used without its head); None when
        the whole text tower trains."""
        from peft import PEFT_TYPE_TO_CONFIG_MAPPING

        if self.text_tower_trained:
            return None
        kwargs = {k: v for k, v in self.peft_config.items() if k != "peft_type"}
        return PEFT_TYPE_TO_CONFIG_MAPPING[self.peft_config["peft_type"]](task_type="FEATURE_EXTRACTION", **kwargs)

    @property
    def text_hidden_size(self) -> int:
        config = self.text_config
        for name in ("hidden_size", "n_embd", "d_model"):
            if getattr(config, name, None) is not None:
                return int(getattr(config, name))
        raise ValueError(f"cannot find the hidden size of text_config ({config.model_type})")


__all__ = ["CLEFTConfig"]
