"""Periodic validation during training (both stages): zero-shot accuracy and retrieval R@5 on a held-out split.

Every `eval_every` optimiser steps and after the last one, on `eval_split` (single-label view: images with
exactly one of the task's classes, as the zero-shot evaluation uses):

- `zero_shot_acc`: zero-shot accuracy with the dataset's hand prompts (stage 1) or the learned prompts (stage 2);
- `retrieval_r_at_5`: image <-> report recall@5 (mean of both directions; identical reports count as matches).

The values go to the trackers (`val/<metric>`) and into the run's `TrainingLog` (`training_log.json`, key
`validation`); the step loop keeps the model of the best `best_metric` in `output_dir/best_model` (`save_best`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..data import get_dataset_spec, get_split, make_loader, single_label_split
from ..evaluation.embeddings import compute_image_embeddings, compute_text_embeddings
from ..evaluation.retrieval import retrieval_recall
from .run_log import TrainingLog

logger = logging.getLogger(__name__)
METRICS = ("zero_shot_acc", "retrieval_r_at_5")


class PeriodicValidation:
    """The validation of one stage run on `eval_split` of the run's `datasets` (loaded once, with the run's
    loader options); `after_step(model, step)` is called by the step loop."""

    def __init__(
        self,
        args: Any,
        accelerator,
        processor,
        datasets,
        log: TrainingLog,
        *,
        class_names: list[str] | None,
        learned_prompts: bool,
    ):
        self.args, self.accelerator, self.processor, self.log = args, accelerator, processor, log
        self.learned_prompts = learned_prompts
        spec = get_dataset_spec(args.dataset)
        task = spec.task_name(args.dataset_kwargs)
        try:
            split = get_split(datasets, args.eval_split)
        except ValueError as error:
            raise ValueError(f"{error}: set eval_split to one of them, or eval_every: 0 (no validation)") from None
        dataset, self.class_names = single_label_split(split, spec, task, class_names, seed=args.seed)
        self.hand_prompts = spec.hand_prompts(task, self.class_names)
        self.loader = accelerator.prepare(
            make_loader(
                dataset,
                processor,
                shuffle=False,
                batch_size=args.per_device_batch_size,
                num_workers=args.dataloader_num_workers,
                seed=args.seed,
                max_length=getattr(args, "max_text_length", None),
                skip_bad=args.skip_bad,
            )
        )
        log.track_validation(METRICS, args.best_metric, args.save_best)
        logger.info(
            "validation every %d steps on %s (%d images, %d classes)",
            args.eval_every,
            args.eval_split,
            len(dataset),
            len(self.class_names),
        )

    @torch.no_grad()
    def compute(self, model) -> dict[str, float]:
        """The validation metrics of the current (prepared) model; every process computes the same values."""
        unwrapped = self.accelerator.unwrap_model(model)
        image_embeds, labels, texts = compute_image_embeddings(model, self.loader, self.accelerator)
        names = [name.lower() for name in self.class_names] if self.learned_prompts else self.hand_prompts
        probabilities = (
            unwrapped.zero_shot_classify(
                image_embeds=image_embeds.to(self.accelerator.device),
                class_names=names,
                processor=self.processor,
                prompt_template=None if self.learned_prompts else "{}",
                use_learned_prompts=self.learned_prompts,
            )
            .float()
            .cpu()
        )
        accuracy = float((probabilities.argmax(1).numpy() == labels).mean())
        text_embeds = compute_text_embeddings(
            unwrapped, self.processor, texts, batch_size=self.args.per_device_batch_size
        )
        recall = retrieval_recall(image_embeds, text_embeds, texts, ks=(5,))["mean"][5]
        return {"zero_shot_acc": accuracy, "retrieval_r_at_5": float(recall)}

    def due(self, step: int) -> bool:
        return step % self.args.eval_every == 0 or step == self.args.max_steps

    def after_step(self, model, step: int) -> bool:
        """Validate (when due), log and record the metrics; True when the model is a new best to keep
        (`save_best`). The model is left in eval mode: the caller restores its training mode."""
        if not self.due(step):
            return False
        metrics = self.compute(model)
        self.accelerator.log({f"val/{name}": value for name, value in metrics.items()}, step=step)
        logger.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        new_best = self.log.add_validation(step, metrics)
        if new_best:
            logger.info(
                "new best %s %.4f at step %d: saving %s/best_model",
                self.args.best_metric,
                metrics[self.args.best_metric],
                step,
                self.args.output_dir,
            )
        return new_best


__all__ = ["METRICS", "PeriodicValidation"]
