"""CLEFT model: timm vision tower + PEFT-adapted causal LLM text tower, CLIP-style contrastive head, prompts."""

from __future__ import annotations

import re
from typing import Any

from peft.tuners.tuners_utils import BaseTunerLayer
import timm
import torch
from torch import nn
import torch.nn.functional as F
from transformers import PreTrainedModel

from .configuration_cleft import CLEFTConfig
from .features_cleft import CLEFTFeaturesMixin
from .loading_cleft import check_attn_implementation, resolve_llm_dtype
from .loss_cleft import clip_loss
from .outputs_cleft import CLEFTOutput
from .projection_cleft import build_projection, init_projection, project
from .prompt_ensembles_cleft import CLEFTPromptEnsembleMixin
from .prompt_learning_cleft import CLEFTPromptLearner
from .prompt_sets_cleft import CLEFTPromptSetsMixin, build_prompt_learner
from .quantization_cleft import load_quantized_llm
from .saving_cleft import CLEFTSavingMixin
from .similarity_maps_cleft import CLEFTSimilarityMapsMixin
from .text_tower_cleft import build_text_tower, pretrained_text_model, unwrapped_text_model
from .zero_shot_cleft import CLEFTZeroShotMixin


def build_vision_tower(config: CLEFTConfig, pretrained: bool = False) -> nn.Module:
    """timm image encoder without head; for `"mean"` pooling the final norm is dropped (pre-norm features)."""
    kwargs = {"pretrained": pretrained, "num_classes": 0, **config.vision_model_kwargs}
    try:  # transformers (ViT, DeiT, EVA...) take the input size; convolutional networks do not need it
        model = timm.create_model(config.vision_model_name, img_size=config.image_size, **kwargs)
    except TypeError as error:
        if "img_size" not in str(error):
            raise
        model = timm.create_model(config.vision_model_name, **kwargs)
    if config.image_pooling == "mean" and hasattr(model, "norm"):
        model.norm = nn.Identity()
    return model


def vision_block_classes(vision_model: nn.Module) -> set[str]:
    """Class names of the repeated blocks of a timm tower (ViT `blocks`, ConvNeXt `stages`, ResNet `layer1-4`):
    the units FSDP wraps and device maps keep whole."""
    for name in ("blocks", "stages", "layers"):
        container = getattr(vision_model, name, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container):
            return {type(block).__name__ for block in container}
    stages = [getattr(vision_model, f"layer{i}", None) for i in range(1, 5)]
    return {type(block).__name__ for stage in stages if isinstance(stage, nn.Sequential) for block in stage}


class CLEFTPreTrainedModel(PreTrainedModel):
    config_class = CLEFTConfig
    config: CLEFTConfig
    base_model_prefix = "cleft"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _keys_to_ignore_on_load_unexpected = [r"^prompt_learner\.ctx$"]  # an older stage-1 folder's unused context
    _supports_sdpa = True
    _supports_flash_attn = True  # the attention that matters is the LLM's; transformers checks it supports it
    # Trainable parts stay float32 masters when `dtype` makes the frozen base LLM bfloat16/float16.
    _keep_in_fp32_modules_strict = [
        "vision_model",
        "visual_projection",
        "text_projection",
        "logit_scale",
        "logit_bias",
        "prompt_sets",
        "lora_",
        "ia3_",
        "prompt_encoder",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise CLEFT's own layers (projections, temperature, bias, prompts); the towers keep their own."""
        if isinstance(module, CLEFTModel):
            init_projection(module.visual_projection)
            init_projection(module.text_projection)
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            nn.init.constant_(module.logit_bias, self.config.logit_bias_init_value)
        elif isinstance(module, CLEFTPromptLearner):
            module.reset_parameters()

    def init_weights(self) -> None:
        """At construction (`post_init`) initialise CLEFT's own layers only: the towers arrive initialised (timm and
        the LLM by their constructors or `from_pretrained`, the PEFT adapter by peft, LoRA B = 0), and the LLM
        family's generic init would overwrite them. `from_pretrained` still runs transformers'
        `initialize_weights` on whatever a checkpoint lacks."""
        if self.logit_scale.device.type != "meta":
            self._init_weights(self)
            for learner in self.prompt_sets.values():
                self._init_weights(learner)

    def initialize_weights(self) -> None:
        """transformers' init of what a loaded checkpoint lacks. An adapter-only checkpoint lacks only the base
        LLM, whose tensors `load_base_llm_weights` moves in right after: initialising them would be wasted time."""
        if self.config.checkpoint_has_base_model:
            super().initialize_weights()


class CLEFTModel(
    CLEFTFeaturesMixin,
    CLEFTPromptSetsMixin,
    CLEFTZeroShotMixin,
    CLEFTPromptEnsembleMixin,
    CLEFTSimilarityMapsMixin,
    CLEFTSavingMixin,
    CLEFTPreTrainedModel,
):
    r"""CLEFT: contrastive image-text model whose text encoder is a PEFT-adapted causal LLM.

    Image features: timm tower, mean of all final tokens before the last LayerNorm (or normalised CLS), then a
    linear projection. Text features: hidden state of the last non-padding token of the LLM (no LM head),
    then a linear projection. Both are L2-normalised and compared with a learnable temperature.
    """

    def __init__(
        self, config: CLEFTConfig, vision_model: nn.Module | None = None, text_model: nn.Module | None = None
    ):
        super().__init__(config)
        self.vision_model = vision_model if vision_model is not None else build_vision_tower(config)
        self.text_model = build_text_tower(config, text_model)
        self.vision_embed_dim = self.vision_model.num_features
        self.text_embed_dim = config.text_hidden_size
        self.visual_projection = build_projection(config, self.vision_embed_dim)
        self.text_projection = build_projection(config, self.text_embed_dim)
        # 1-element, not 0-d (as SigLIP): FSDP2's fully_shard cannot shard scalar parameters.
        self.logit_scale = nn.Parameter(torch.tensor([float(config.logit_scale_init_value)]))
        # Added to the scaled similarities: SigLIP's bias and the stage-2 BCE bias; trained only by those losses.
        self.logit_bias = nn.Parameter(torch.tensor([float(config.logit_bias_init_value)]), requires_grad=False)
        self.prompt_sets = nn.ModuleDict(
            {  # the learned prompt sets by task (e.g. EMBED density and birads)
                task: build_prompt_learner(entry, config, self.text_embed_dim)
                for task, entry in (config.prompt_sets or {}).items()
            }
        )
        # Units FSDP wraps / device maps keep whole: the LLM's decoder layer (reached through PEFT) + timm blocks.
        self._no_split_modules = sorted(vision_block_classes(self.vision_model))
        self._ignore_missing_base_weights(not config.checkpoint_has_base_model)
        self._frozen_parameter_names = {name for name, p in self.named_parameters() if not p.requires_grad}
        self.post_init()

    # ----------------------------------------------------------------- construction helpers
    def base_llm_state_keys(self) -> list[str]:
        """State-dict keys of the frozen base LLM (everything in the text tower that PEFT did not add); none when
        the whole text tower trains."""
        if self.config.text_tower_trained:
            return []
        adapter_keys = set()
        for name, module in self.text_model.named_modules():
            if isinstance(module, BaseTunerLayer):
                adapter_keys.update(
                    f"text_model.{name}.{key}" for key in module.state_dict() if not key.startswith("base_layer.")
                )
        return [
            key
            for key in self.state_dict()
            if key.startswith("text_model.")
            and key not in adapter_keys
            and not key.startswith("text_model.prompt_encoder.")
        ]

    def _ignore_missing_base_weights(self, ignore: bool) -> None:
        if ignore:  # adapter-only checkpoint: the base LLM comes from `text_model_name_or_path`
            pattern = "^(?:" + "|".join(re.escape(k) for k in self.base_llm_state_keys()) + ")$"
            self._keys_to_ignore_on_load_missing = set(self._keys_to_ignore_on_load_missing or ()) | {pattern}

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision: str,
        text: str,
        *,
        vision_pretrained: bool = True,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        text_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> CLEFTModel:
        """A new CLEFT model from a timm vision model name and a causal LLM id or folder.

        `dtype` is the frozen base LLM's (default: bfloat16 on GPU, float32 on CPU); the vision tower, adapters,
        projections, logit scale and prompts are float32 (masters under autocast). `attn_implementation` is the
        LLM's ("sdpa" by default, "flash_attention_2" where flash-attn is installed, "eager").
        `text_kwargs` go to `AutoModelForCausalLM.from_pretrained` (default `use_safetensors=True`, so no pickle
        is ever loaded); `config_kwargs` are `CLEFTConfig` fields (peft_config, projection_dim, image_size...;
        `text_quantization` loads the LLM in 4 or 8 bits, `dtype` then being that of its unquantised parts).
        """
        from transformers import AutoConfig

        check_attn_implementation(attn_implementation)
        text_kwargs = {"use_safetensors": True, "dtype": resolve_llm_dtype(dtype), **(text_kwargs or {})}
        if attn_implementation is not None:
            text_kwargs["attn_implementation"] = attn_implementation
        text_config = AutoConfig.from_pretrained(text, **{k: v for k, v in text_kwargs.items() if k == "revision"})
        config = CLEFTConfig(
            vision_model_name=vision,
            text_config=text_config.to_dict(),
            text_model_name_or_path=str(text),
            **config_kwargs,
        )
        if config.text_tower_trained:  # a text tower trained whole keeps float32 masters, as the vision tower
            text_kwargs["dtype"] = torch.float32
        vision_model = build_vision_tower(config, pretrained=vision_pretrained)
        if vision_pretrained:  # recorded for the model card's `base_model`
            source = vision_model.pretrained_cfg or {}
            config.vision_pretrained_source = source.get("hf_hub_id") or f"timm/{config.vision_model_name}"
        cut = config.text_num_layers is not None or config.text_is_encoder
        if config.text_quantization:
            language_model = load_quantized_llm(text, config.text_quantization, **text_kwargs)
        else:
            language_model = pretrained_text_model(text, config.text_config if cut else None, **text_kwargs)
        return cls(config, vision_model=vision_model, text_model=language_model)

    def get_input_embeddings(self) -> nn.Module:
        """The LLM's token embeddings (frozen); transformers and accelerate (FSDP2 wrapping) look them up here."""
        return self.text_model.get_input_embeddings()

    # ----------------------------------------------------------------- training modes
    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Checkpoint the LLM layers (non-reentrant: works with frozen embeddings) and the timm blocks.
        `gradient_checkpointing_enable` (transformers' older name) lands here too."""
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        unwrapped_text_model(self.text_model).activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers, offload=offload
        )
        if hasattr(self.vision_model, "set_grad_checkpointing"):
            self.vision_model.set_grad_checkpointing(True)

    def activation_checkpointing_disable(self) -> None:
        unwrapped_text_model(self.text_model).activation_checkpointing_disable()
        if hasattr(self.vision_model, "set_grad_checkpointing"):
            self.vision_model.set_grad_checkpointing(False)

    @property
    def is_activation_checkpointing(self) -> bool:
        return unwrapped_text_model(self.text_model).is_activation_checkpointing

    def configure_for_prompt_tuning(self, freeze_vision: bool = False, train_logit_bias: bool = True) -> None:
        """Stage 2: freeze the text side (LLM, adapter, text projection) and the stored prompt sets; train the
        active set's context, and `logit_bias` when `train_logit_bias`; the vision tower, image projection and
        logit scale keep training unless `freeze_vision`.

        Train only what the loss reads: `logit_bias` only moves `logits_per_image` (the BCE loss), not an InfoNCE
        over embeddings (softmax ignores a shared bias). A trainable parameter without a gradient makes DDP wait
        for it forever ("Expected to have finished reduction in the prior iteration")."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        if self.config.active_prompt_set is not None:  # the active set's context; the others stay frozen
            self.prompt_sets[self.config.active_prompt_set].requires_grad_(True)
        if not freeze_vision:
            for module in (self.vision_model, self.visual_projection):
                module.requires_grad_(True)
            self.logit_scale.requires_grad_(True)
        self.logit_bias.requires_grad_(train_logit_bias)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        image_embeds: torch.FloatTensor | None = None,
        use_learned_prompts: bool = False,
        **kwargs: Any,
    ) -> CLEFTOutput | tuple:
        r"""Image-text similarity logits (CLIP's interface).

        Texts are `input_ids`/`attention_mask`, or with `use_learned_prompts=True` the learned context followed
        by those ids as class texts (stored class names when `input_ids` is None). `image_embeds` (normalised)
        replaces `pixel_values` when image features are cached. `output_hidden_states` reaches both towers,
        `output_attentions` the LLM (weights need its eager attention; timm returns none). `loss` is `clip_loss` without cross-process negatives (the
        trainer calls `clip_loss` / `siglip_loss` with `gather=True`). Unknown keyword arguments are an error.
        """
        if kwargs:
            raise TypeError(f"CLEFTModel.forward got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        vision_outputs = None
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("forward needs pixel_values (or precomputed image_embeds)")
            vision_outputs = self.vision_forward(pixel_values, output_hidden_states=bool(output_hidden_states))
            pooled = vision_outputs.pooler_output
            image_embeds = F.normalize(project(self.visual_projection, pooled), dim=-1)
        text_kwargs = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        if use_learned_prompts:
            text_outputs = self.prompt_forward(input_ids, attention_mask, **text_kwargs)
        elif input_ids is None:
            raise ValueError("forward needs input_ids (or use_learned_prompts=True); use get_*_features for one side")
        else:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            text_outputs = self.text_forward(mask, input_ids=input_ids, **text_kwargs)
        pooled = text_outputs.pooler_output
        text_embeds = F.normalize(project(self.text_projection, pooled), dim=-1)
        logits_per_image = self.similarity_logits(image_embeds, text_embeds)
        loss = None
        if return_loss:
            if image_embeds.shape[0] != text_embeds.shape[0]:
                raise ValueError("return_loss needs as many texts as images (matching pairs)")
            loss = clip_loss(image_embeds, text_embeds, self.logit_scale, gather=False)
        output = CLEFTOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )
        return output if return_dict is not False else output.to_tuple()


__all__ = ["CLEFTModel", "CLEFTPreTrainedModel", "CLEFTOutput"]
