"""Stage 2: learn the context prompts on top of a frozen stage-1 text side; the prompts are saved in the model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import DatasetSpec, get_dataset_spec, get_split, label_names, make_loader, restrict_labels
from ..losses import clip_loss, multilabel_bce_prompt_loss
from ..modeling import CLEFTModel, CLEFTProcessor
from .config import PromptTuneArguments, save_arguments
from .contrastive_pretraining import caption_ids
from .loop import batch_stream, finish_run, make_accelerator, prepare_run, resume_run, train_steps

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


def prompt_loss(args: PromptTuneArguments, model, unwrapped: CLEFTModel, batch: dict[str, Any],
                class_names: list[str], processor: CLEFTProcessor) -> torch.Tensor:
    """Loss of one batch. BCE: every image against every class prompt (class prompts encoded once per step,
    shared by all images). CLIP: InfoNCE between images and the learned prompt of their positive classes."""
    image_inputs = {"image_embeds": batch["image_embeds"]} if "image_embeds" in batch else {"pixel_values": batch["pixel_values"]}
    labels = batch["labels"].float()
    if args.loss == "bce":
        outputs = model(**image_inputs, use_learned_prompts=True)  # (B, C) against the stored class prompts
        logits = outputs.logits_per_image + unwrapped.prompt_learner.logit_bias
        return multilabel_bce_prompt_loss(logits, labels, batch.get("label_mask"))
    texts = [", ".join(n.lower() for n, on in zip(class_names, row) if on > 0.5) or "no finding"
             for row in labels.tolist()]
    unique = sorted(set(texts))
    encoded = processor.tokenizer([" " + text for text in unique], padding=True, return_tensors="pt")
    device = labels.device
    outputs = model(**image_inputs, input_ids=encoded["input_ids"].to(device),
                    attention_mask=encoded["attention_mask"].to(device), use_learned_prompts=True)
    rows = torch.tensor([unique.index(text) for text in texts], device=device)
    return clip_loss(outputs.image_embeds, outputs.text_embeds[rows], unwrapped.logit_scale,
                     text_ids=caption_ids(texts).to(device))


def run_prompt_tuning(args: PromptTuneArguments) -> dict[str, Any]:
    """Train stage 2 and write `output_dir/model` (the stage-1 model with its learned prompts + processor)."""
    accelerator = make_accelerator(args)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_arguments(args, output_dir / "prompt_tune_args.yaml")
    model = CLEFTModel.from_pretrained(args.model_name_or_path)
    processor = CLEFTProcessor.from_pretrained(args.model_name_or_path)
    spec = get_dataset_spec(args.dataset)
    task = spec.task_name(args.dataset_kwargs)
    dataset = get_split(spec.load(args.data_root, **(args.dataset_kwargs or {})), args.train_split)
    class_names = list(args.class_names or default_class_names(dataset, spec, task))
    dataset = restrict_labels(dataset, class_names)
    prompt_names = [name.lower() for name in class_names]  # as written in prompts ("pleural effusion")
    model.setup_prompt_learning(prompt_names, processor, num_context_tokens=args.num_context_tokens,
                                class_specific=args.class_specific, init_text=args.init_text)
    model.configure_for_prompt_tuning(freeze_vision=args.freeze_vision)
    loader = make_loader(dataset, processor, shuffle=not args.freeze_vision, batch_size=args.per_device_batch_size,
                         num_workers=args.dataloader_num_workers, seed=args.seed, drop_last=True,
                         augment=None if args.freeze_vision else {})
    model, optimizer, scheduler, loader = prepare_run(accelerator, args, model, loader, "cleft_prompt_tune")
    unwrapped: CLEFTModel = accelerator.unwrap_model(model)

    checkpoints, log, start = resume_run(accelerator, args)
    if args.freeze_vision:  # image features do not change: compute them once, then cycle over the cache
        batches = cached_batch_stream(cache_image_embeddings(unwrapped, loader, accelerator), args.seed,
                                      start * args.gradient_accumulation_steps)
    else:
        batches = batch_stream(loader, accelerator, start * args.gradient_accumulation_steps)
    model.train()
    unwrapped.text_model.eval()  # frozen text side: no adapter dropout on the prompts
    if args.freeze_vision:
        unwrapped.vision_model.eval()
    train_steps(accelerator, model, optimizer, scheduler, checkpoints, log, batches,
                lambda batch: prompt_loss(args, model, unwrapped, batch, class_names, processor),
                start=start, args=args, desc="stage 2")
    final_dir = finish_run(accelerator, model, processor, log, args, "stage 2 (prompts)", args.model_name_or_path)
    return {"model_dir": str(final_dir), "steps": args.max_steps, "class_names": class_names, "loss_curve": log.points}
