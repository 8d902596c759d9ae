"""Stage 1: contrastive image-report pretraining of the vision tower and the LLM's PEFT adapters."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoTokenizer

from ..data import caption_ids, get_dataset_spec, get_split, make_loader
from ..modeling import CLEFTImageProcessor, CLEFTModel, CLEFTProcessor
from ..modeling.loss_cleft import clip_loss, siglip_loss
from .config import PretrainArguments
from .runner import Stage, run_stage

logger = logging.getLogger(__name__)


def build_processor(args: PretrainArguments) -> CLEFTProcessor:
    """Tokenizer of the LLM + an image processor at the model's resolution."""
    tokenizer = AutoTokenizer.from_pretrained(args.model_field("text_model_name_or_path"))
    size = args.model_field("image_size")
    image_processor = CLEFTImageProcessor(size=size, crop_size=size, do_otsu_crop=args.otsu_crop)
    return CLEFTProcessor(image_processor, tokenizer, max_length=args.max_text_length)


def build_model(args: PretrainArguments) -> CLEFTModel:
    """A new CLEFT model: `args.model_config` (CLEFTConfig fields; the rest keep its defaults, except the
    hand-prompt template, the learned prompts' initial text and the modality, which are the dataset's, and its
    paper prompts per task), the timm vision tower (pretrained weights if `vision_pretrained`) and the causal
    LLM's pretrained weights."""
    spec = get_dataset_spec(args.dataset)
    modality = spec.modality
    hand_prompts = {
        task: dict(zip((n.lower() for n in spec.task(task).class_names), spec.hand_prompts(task)))
        for task in spec.tasks
    }
    config = {
        "prompt_template": modality.prompt_template,
        "prompt_init_text": modality.prompt_init_text,
        "modality": modality.tag,
        "hand_prompts": hand_prompts,
        **args.model_config,
    }
    vision = config.pop("vision_model_name", args.model_field("vision_model_name"))
    text = config.pop("text_model_name_or_path", args.model_field("text_model_name_or_path"))
    model = CLEFTModel.from_vision_text_pretrained(
        vision,
        text,
        vision_pretrained=args.vision_pretrained,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        **config,
    )
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def contrastive_loss_fn(args: PretrainArguments, model: CLEFTModel, outputs, text_ids: torch.Tensor | None):
    """The configured contrastive loss on one micro-batch (negatives gathered across processes)."""
    if args.loss == "siglip":
        return siglip_loss(
            outputs.image_embeds,
            outputs.text_embeds,
            model.logit_scale,
            model.logit_bias,
            gather=args.gather_negatives,
            text_ids=text_ids,
        )
    return clip_loss(
        outputs.image_embeds, outputs.text_embeds, model.logit_scale, gather=args.gather_negatives, text_ids=text_ids
    )


class ContrastivePretraining(Stage):
    """Stage 1: symmetric InfoNCE (or SigLIP) between images and their reports."""

    name, project, arguments_file = "stage 1 (contrastive)", "cleft_pretrain", "pretrain_args.yaml"
    recipe_title = "1 (contrastive pretraining)"

    def build(self, datasets):
        args = self.args
        processor = build_processor(args)
        model = build_model(args)
        if args.loss == "siglip":  # SigLIP's initial temperature and bias
            with torch.no_grad():
                model.logit_scale.fill_(torch.log(torch.tensor(10.0)))
                model.logit_bias.fill_(-10.0)
            model.logit_bias.requires_grad_(True)
        spec = self.spec
        dataset = get_split(datasets, args.train_split)
        loader = make_loader(
            dataset,
            processor,
            shuffle=True,
            batch_size=args.per_device_batch_size,
            num_workers=args.dataloader_num_workers,
            seed=args.seed,
            max_length=args.max_text_length,
            augment=dict(args.augmentation or {}) if args.augment else None,
            label_caption_prob=args.label_caption_prob,
            spec=spec,
            task=spec.task_name(args.dataset_kwargs),
            skip_bad=args.skip_bad,
        )
        return model, processor, loader

    def loss(self, model, batch: dict[str, Any]) -> torch.Tensor:
        outputs = model(
            pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        text_ids = (
            caption_ids(batch["text"]).to(outputs.image_embeds.device) if self.args.dedup_identical_texts else None
        )
        return contrastive_loss_fn(self.args, self.accelerator.unwrap_model(model), outputs, text_ids)


def run_pretraining(args: PretrainArguments) -> dict[str, Any]:
    """Train stage 1 and write `output_dir/model` (model + processor, atomically). Returns a summary."""
    return run_stage(ContrastivePretraining(args))
