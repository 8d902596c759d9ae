"""Stage 2: learn the context prompts on top of a frozen stage-1 text side; the prompts are saved in the model."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.distributed.fsdp import register_fsdp_forward_method
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import DatasetSpec, caption_ids, get_split, label_names, make_loader, restrict_labels
from ..modeling import CLEFTModel, CLEFTProcessor
from ..modeling.loss_cleft import clip_loss, multilabel_bce_prompt_loss
from .config import PromptTuneArguments
from .runner import Stage, run_stage

logger = logging.getLogger(__name__)


def default_class_names(dataset, spec: DatasetSpec, task: str | None = None) -> list[str]:
    """The classes of the dataset's task (CheXpert 5x200 for CXR reports) when the split has them, else all of
    the split's classes."""
    names, wanted = label_names(dataset), list(spec.task(task).class_names)
    return wanted if set(wanted) <= set(names) else names


@torch.no_grad()
def cache_image_embeddings(model: CLEFTModel, loader, accelerator) -> list[dict[str, torch.Tensor]]:
    """With a frozen vision tower: every training batch's normalised image embeddings, computed once."""
    model.eval()
    cached = []
    for batch in tqdm(loader, desc="caching image features", disable=not accelerator.is_local_main_process):
        embeds = F.normalize(model.get_image_features(batch["pixel_values"]), dim=-1)
        cached.append({"image_embeds": embeds, **{k: batch[k] for k in ("labels", "label_mask") if k in batch}})
    return cached


def cached_batch_stream(cache: list[dict[str, torch.Tensor]], seed: int, start: int):
    """Endless cached batches from micro-batch `start` on, in a new seeded order every pass."""
    index = start
    while True:
        epoch, position = divmod(index, len(cache))
        order = torch.randperm(len(cache), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        yield cache[order[position]]
        index += 1


def prompt_loss(
    args: PromptTuneArguments,
    model,
    unwrapped: CLEFTModel,
    batch: dict[str, Any],
    class_names: list[str],
    processor: CLEFTProcessor,
) -> torch.Tensor:
    """Loss of one batch. BCE: every image against every class prompt (class prompts encoded once per step,
    shared by all images). CLIP: InfoNCE between images and the learned prompt of their positive classes."""
    image_inputs = (
        {"image_embeds": batch["image_embeds"]} if "image_embeds" in batch else {"pixel_values": batch["pixel_values"]}
    )
    labels = batch["labels"].float()
    if args.loss == "bce":
        outputs = model(**image_inputs, use_learned_prompts=True)  # (B, C) against the stored class prompts
        logits = outputs.logits_per_image  # scaled similarities + the model's logit_bias
        return multilabel_bce_prompt_loss(logits, labels, batch.get("label_mask"))
    texts = [
        ", ".join(n.lower() for n, on in zip(class_names, row) if on > 0.5) or "no finding" for row in labels.tolist()
    ]
    unique = sorted(set(texts))
    encoded = processor.tokenizer([" " + text for text in unique], padding=True, return_tensors="pt")
    device = labels.device
    outputs = model(
        **image_inputs,
        input_ids=encoded["input_ids"].to(device),
        attention_mask=encoded["attention_mask"].to(device),
        use_learned_prompts=True,
    )
    rows = torch.tensor([unique.index(text) for text in texts], device=device)
    return clip_loss(
        outputs.image_embeds, outputs.text_embeds[rows], unwrapped.logit_scale, text_ids=caption_ids(texts).to(device)
    )


class PromptTuning(Stage):
    """Stage 2: learn the context prompts of the class names on a frozen stage-1 text side."""

    name, project, arguments_file = "stage 2 (prompts)", "cleft_prompt_tune", "prompt_tune_args.yaml"
    recipe_title = "2 (context prompt learning)"
    learned_prompts = True

    def __init__(self, args: PromptTuneArguments):
        super().__init__(args)
        self.previous_model = args.model_name_or_path
        if self.spec.task_argument:  # one prompt set per task (EMBED density, BI-RADS): its own curves and recipe
            self.task = self.spec.task_name(args.dataset_kwargs)
            self.name = f"stage 2 (prompts, {self.task})"
            self.recipe_title = f"2 (context prompt learning, {self.task})"
        self.processor: CLEFTProcessor | None = None

    def build(self, datasets):
        args = self.args
        model = CLEFTModel.from_pretrained(
            args.model_name_or_path,
            dtype=args.dtype,
            attn_implementation=args.attn_implementation,
            allow_partial_weights=args.allow_partial_weights,
        )
        self.processor = processor = CLEFTProcessor.from_pretrained(args.model_name_or_path)
        spec, task = self.spec, self.spec.task_name(args.dataset_kwargs)
        dataset = get_split(datasets, args.train_split)
        self.class_names = list(args.class_names or default_class_names(dataset, spec, task))
        dataset = restrict_labels(dataset, self.class_names)
        prompt_names = [name.lower() for name in self.class_names]  # as written in prompts ("pleural effusion")
        model.setup_prompt_learning(
            prompt_names,
            processor,
            num_context_tokens=args.num_context_tokens,
            class_specific=args.class_specific,
            init_text=args.init_text,
            task=task,
        )
        model.configure_for_prompt_tuning(freeze_vision=args.freeze_vision, train_logit_bias=args.loss == "bce")
        loader = make_loader(
            dataset,
            processor,
            shuffle=not args.freeze_vision,
            batch_size=args.per_device_batch_size,
            num_workers=args.dataloader_num_workers,
            seed=args.seed,
            drop_last=True,
            augment=None if args.freeze_vision or not args.augment else {},
            skip_bad=args.skip_bad,
        )
        return model, processor, loader

    def batches(self, model, loader, start_micro_step: int):
        if not self.args.freeze_vision:
            return super().batches(model, loader, start_micro_step)
        # image features do not change: compute them once, then cycle over the cache (skipped images: counted
        # once, in this pass over the whole dataset)
        self.skipped_images.restore({"count": 0, "files": []})
        batches = (self.skipped_images.take(batch) for batch in loader)
        unwrapped = self.accelerator.unwrap_model(model)
        register_fsdp_forward_method(unwrapped, "get_image_features")  # FSDP2 gathers its shards (else a no-op)
        cache = cache_image_embeddings(unwrapped, batches, self.accelerator)
        return cached_batch_stream(cache, self.args.seed, start_micro_step)

    def set_train_mode(self, model) -> None:
        model.train()
        unwrapped: CLEFTModel = self.accelerator.unwrap_model(model)
        unwrapped.text_model.eval()  # frozen text side: no adapter dropout on the prompts
        if self.args.freeze_vision:
            unwrapped.vision_model.eval()

    def loss(self, model, batch: dict[str, Any]) -> torch.Tensor:
        return prompt_loss(
            self.args, model, self.accelerator.unwrap_model(model), batch, self.class_names, self.processor
        )

    def summary(self) -> dict[str, Any]:
        return {"class_names": self.class_names}


def run_prompt_tuning(args: PromptTuneArguments) -> dict[str, Any]:
    """Train stage 2 and write `output_dir/model` (the stage-1 model with its learned prompts + processor)."""
    return run_stage(PromptTuning(args))
