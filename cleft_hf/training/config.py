"""Run arguments of the two training scripts (stage 1, stage 2) as dataclasses with help texts.

They are read by `cleft_hf.arguments` (transformers' `HfArgumentParser`, YAML `common` + per-script sections as
defaults, then the command line):

    args = parse_arguments(PretrainArguments, ["--config", "cleft_hf/demo/demo.yaml", "--max_steps", "50"],
                           section="pretrain")

The new model's fields are one `model_config` mapping of `CLEFTConfig` fields (vision_model_name, image_size,
text_model_name_or_path, peft_config, projection_dim, ...); the fields it leaves out keep CLEFTConfig's
defaults (the paper's), which live only there. Mixed precision, number of processes and the distributed
backend come from `accelerate launch` / its config file. The evaluation's arguments are
`cleft_hf.evaluation.arguments.EvaluateArguments`.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from typing import Any, Literal

from ..arguments import CommonArguments, ConfigError, Mapping, arg, did_you_mean, require
from ..number_checks import check_range


@dataclass
class _TrainingArguments(CommonArguments):
    """Optimisation, checkpointing and logging fields of both training stages."""

    train_split: str = arg("train", "Split used for training.")
    eval_split: str | None = arg("validation", "Split of the periodic validation (none: no validation).")
    optimizer: Literal["adamw", "sgd"] = arg("adamw", "Optimiser: adamw or sgd (momentum).")
    learning_rate: float = arg(4e-5, "Peak learning rate after warm-up.")
    weight_decay: float = arg(0.1, "Weight decay; never on biases, norms, logit scale, prompt context.")
    betas: list[float] = arg([0.9, 0.999], "AdamW betas (command line: --betas 0.9 0.999).")
    momentum: float = arg(0.9, "SGD momentum.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = arg("cosine", "Decay after the linear warm-up.")
    min_lr_ratio: float = arg(0.0, "Final learning rate as a fraction of the peak (cosine).")
    warmup_steps: int = arg(4000, "Linear warm-up length in optimiser steps (at most max_steps).")
    max_steps: int = arg(40000, "Total optimiser steps.")
    gradient_accumulation_steps: int = arg(
        1,
        "Micro-batches per optimiser step. Each micro-batch is its own contrastive problem (its negatives come "
        "from that micro-batch on all processes), so this is not the same as a larger batch.",
    )
    max_grad_norm: float | None = arg(1.0, "Gradient clipping norm (none or 0: no clipping).")
    save_every: int = arg(1000, "Save the training state every N optimiser steps (0: never).")
    keep_last: int = arg(3, "Training-state checkpoints kept (<= 0: all).")
    resume_from_checkpoint: str | None = arg(
        None, "'latest' (newest in output_dir/checkpoints, if any) or a checkpoint folder."
    )
    allow_inexact_resume: bool = arg(
        False, "Resume even when the checkpoint's random states cannot be restored (with a warning; not exact)."
    )
    log_every: int = arg(10, "Log loss and learning rate every N optimiser steps.")
    eval_every: int = arg(
        0,
        "Validate on eval_split every N optimiser steps and after the last one (0: never): zero-shot accuracy "
        "(hand prompts in stage 1, learned prompts in stage 2) and image-report retrieval R@5, logged to the "
        "trackers (val/...) and training_log.json.",
    )
    save_best: bool = arg(True, "With eval_every: keep the model of the best best_metric in output_dir/best_model.")
    best_metric: Literal["zero_shot_acc", "retrieval_r_at_5"] = arg("zero_shot_acc", "Validation metric of save_best.")
    report_to: str = arg("tensorboard", "Accelerate trackers, comma-separated (tensorboard, wandb, ...) or 'none'.")
    push_to_hub: bool = arg(False, "Upload the final model to the Hugging Face Hub (token checked before training).")
    hub_model_id: str | None = arg(None, "Hub repository 'user/name' for push_to_hub.")

    def check_values(self) -> None:
        super().check_values()
        for name in ("learning_rate", "max_steps", "gradient_accumulation_steps", "log_every"):
            check_range(name, getattr(self, name), low=0, low_open=True)
        for name in ("weight_decay", "save_every", "max_grad_norm"):
            check_range(name, getattr(self, name), low=0)
        check_range("momentum", self.momentum, low=0, high=1, high_open=True)
        check_range("betas", self.betas, low=0, high=1, high_open=True)
        require(
            0 <= self.warmup_steps <= self.max_steps,
            f"config field 'warmup_steps' must be in [0, max_steps="
            f"{self.max_steps}], got {self.warmup_steps} (lower it with --warmup_steps)",
        )
        require(
            0.0 <= self.min_lr_ratio <= 1.0, f"config field 'min_lr_ratio' must be in [0, 1], got {self.min_lr_ratio}"
        )
        require(self.eval_every >= 0, f"config field 'eval_every' must be >= 0, got {self.eval_every}")
        require(
            not self.eval_every or self.eval_split is not None,
            "config field 'eval_split' is required when eval_every > 0 (or set eval_every: 0)",
        )
        require(len(self.betas) == 2, f"config field 'betas' takes 2 values, got {self.betas}")
        require(
            not self.push_to_hub or bool(self.hub_model_id),
            "config field 'hub_model_id' is required when push_to_hub is true",
        )

    @property
    def trackers(self) -> list[str]:
        """`report_to` as the list `Accelerator(log_with=...)` takes (empty for 'none')."""
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return [] if names in ([], ["none"]) else names


def _check_model_config(model_config: dict[str, Any]) -> None:
    """Keys are CLEFTConfig fields (closest ones suggested) and CLEFTConfig accepts the values."""
    from ..modeling import CLEFTConfig

    known = CLEFTConfig.field_names()
    for key in model_config:
        if key not in known:
            raise did_you_mean(key, known, "in model_config, whose keys are CLEFTConfig fields")
    fields = dict(model_config)
    text = fields.get("text_model_name_or_path")
    if text and "text_config" not in fields:  # family-dependent fields (text_pooling, LoRA targets) need its config
        from transformers import AutoConfig

        try:
            fields["text_config"] = AutoConfig.from_pretrained(text).to_dict()
        except (OSError, ValueError):
            pass  # not reachable here: checked again when the model is built
    try:
        CLEFTConfig(**fields)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config field 'model_config': {error}") from None


def _check_augmentation(augmentation: dict[str, Any] | None) -> None:
    """Keys are `cleft_hf.data.transforms.Augmentation` options (closest ones suggested), values it accepts."""
    from dataclasses import fields

    from ..data.transforms import Augmentation

    known = [item.name for item in fields(Augmentation)]
    for key in augmentation or {}:
        if key not in known:
            raise did_you_mean(key, known, "in augmentation, whose keys are the train transform's options")
    try:
        Augmentation(**(augmentation or {}))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config field 'augmentation': {error}") from None


@dataclass
class PretrainArguments(_TrainingArguments):
    """Stage 1: contrastive pretraining of the vision tower + PEFT adapters of the LLM (paper recipe defaults)."""

    model_config: Mapping = arg(
        {},
        "CLEFTConfig fields of the new model: vision_model_name, vision_model_kwargs, image_size, image_pooling, "
        "text_model_name_or_path (Hub id or folder of the causal LLM), peft_config, projection_dim, ...; the ones "
        "left out keep CLEFTConfig's defaults (the paper's: DINOv2 ViT-B/14-reg, BioMedLM, LoRA r=8).",
    )
    vision_pretrained: bool = arg(True, "Start from timm's pretrained weights (needs them cached or the Hub).")
    max_text_length: int = arg(256, "Report tokens kept (truncation length).")
    gradient_checkpointing: bool = arg(True, "Recompute LLM activations in backward.")
    label_caption_prob: float = arg(
        0.0,
        "Probability of training on the caption built from an image's labels instead of its report "
        "(the reference code's CheXpert captions; multi-label datasets).",
    )
    otsu_crop: bool = arg(
        False,
        "Crop images to their Otsu foreground (the breast on a mammogram) before resizing. Saved in the image "
        "processor (preprocessor_config.json), so stage 2, evaluation and Hub/pipeline users crop alike.",
    )
    augment: bool = arg(True, "Augment training images (false: the deterministic eval transform).")
    augmentation: Mapping = arg(
        None,
        "Train transform options of cleft_hf.data.transforms (scale, ratio, max_rotation, max_translate, "
        "brightness, contrast, hflip, text_augment); none: its defaults.",
    )
    loss: Literal["clip", "siglip"] = arg("clip", "Symmetric InfoNCE (clip) or sigmoid (siglip).")
    gather_negatives: bool = arg(True, "Use the other processes' embeddings as negatives (reference code: false).")
    dedup_identical_texts: bool = arg(True, "Identical captions in a global batch count as positives.")

    def check_values(self) -> None:
        super().check_values()
        require(self.max_text_length > 0, "config field 'max_text_length' must be > 0")
        check_range("label_caption_prob", self.label_caption_prob, low=0, high=1)
        peft_config = self.model_config.get("peft_config")
        if isinstance(peft_config, dict) and str(peft_config.get("peft_type", "")).upper() == "ADALORA":
            self.model_config["peft_config"] = {"total_step": self.max_steps, **peft_config}  # AdaLoRA's schedule
        require(
            self.model_config.get("projection_head") != "mlp" or self.per_device_batch_size >= 2,
            "model_config projection_head 'mlp' (BatchNorm) needs per_device_batch_size >= 2; raise it, or use "
            "projection_head 'linear'",
        )

    def check_with_libraries(self) -> None:
        super().check_with_libraries()
        _check_model_config(self.model_config)
        _check_augmentation(self.augmentation)

    @staticmethod
    def misplaced_key_hint(key: str, value: Any = None) -> str | None:
        """A CLEFTConfig field given at the top level belongs under model_config (the hint shows `value`)."""
        from ..modeling import CLEFTConfig

        if key not in CLEFTConfig.field_names():
            return None
        shown = "..." if value is None else value if isinstance(value, str) else json.dumps(value)
        return (
            f'is a model field: put it under model_config (command line `--model_config "{{{key}: {shown}}}"`'
            f", YAML `model_config: {{{key}: {shown}}}`)"
        )

    def model_field(self, name: str) -> Any:
        """A field of the new model: `model_config[name]`, else CLEFTConfig's default."""
        if name in self.model_config:
            return self.model_config[name]
        from ..modeling import CLEFTConfig  # torch and the model classes: only for a default

        return getattr(CLEFTConfig, name)


@dataclass
class PromptTuneArguments(_TrainingArguments):
    """Stage 2: learn context prompts on top of a frozen stage-1 text side (reference recipe defaults)."""

    model_name_or_path: str | None = arg(None, "Stage-1 model folder or Hub id (required).")
    allow_partial_weights: bool = arg(
        False, "Load the stage-1 model even when its weights do not cover it (missing ones randomly initialised)."
    )
    optimizer: Literal["adamw", "sgd"] = arg("sgd", "Optimiser: adamw or sgd (momentum).")
    learning_rate: float = arg(1e-4, "Peak learning rate after warm-up.")
    min_lr_ratio: float = arg(0.1, "Final learning rate as a fraction of the peak (1e-4 -> 1e-5).")
    weight_decay: float = arg(1e-3, "Weight decay (not applied to the prompt context).")
    warmup_steps: int = arg(100, "Linear warm-up length in optimiser steps (at most max_steps).")
    max_steps: int = arg(8000, "Total optimiser steps.")
    num_context_tokens: int = arg(30, "Learned context tokens placed before the class name.")
    class_specific: bool = arg(False, "One context per class instead of one shared context.")
    init_text: str | None = arg(
        None,
        "Text whose token embeddings initialise the context, repeated to fill it (none: the model's, i.e. the "
        "dataset's prompt without the class, e.g. 'this is a chest x ray of a patient with'; empty: random).",
    )
    freeze_vision: bool = arg(False, "Freeze the vision tower, cache image features (reference: it trains).")
    augment: bool = arg(True, "Augment training images while the vision tower trains (false: the eval transform).")
    class_names: list[str] | None = arg(None, "Classes to learn prompts for (none: the dataset's).")
    loss: Literal["clip", "bce"] = arg("bce", "Multi-label BCE over class prompts, or InfoNCE on label texts.")

    def check_values(self) -> None:
        super().check_values()
        require(bool(self.model_name_or_path), "config field 'model_name_or_path' (the stage-1 model) is required")
        require(self.num_context_tokens > 0, "config field 'num_context_tokens' must be > 0")


__all__ = ["PretrainArguments", "PromptTuneArguments"]
