"""Periodic validation during training (both stages): zero-shot accuracy and retrieval R@5 on a held-out split.

Every `eval_every` optimiser steps and after the last one, on `eval_split` (single-label view: images with
exactly one of the task's classes, as the zero-shot evaluation uses):

- `zero_shot_acc`: zero-shot accuracy with the dataset's hand prompts (stage 1) or the learned prompts (stage 2);
- `retrieval_r_at_5`: image <-> report recall@5 (mean of both directions; identical reports count as matches).

The values go to the trackers (`val/<metric>`), into the run's log (`training_log.json`, key `validation`), and
with `save_best` the model of the best `best_metric` is kept in `output_dir/best_model` (written atomically).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from .loop import TRAINING_LOG

logger = logging.getLogger(__name__)
METRICS = ("zero_shot_acc", "retrieval_r_at_5")


class PeriodicValidation:
    """The validation hook of one stage run; `after_step(step)` is called by the step loop."""

    def __init__(self, args: Any, accelerator, model, processor, *, class_names: list[str] | None,
                 learned_prompts: bool, stage_name: str, set_train_mode: Callable[[Any], None],
                 save_model: Callable[[Path], None]):
        from ..data import get_dataset_spec, get_split, make_loader, single_label_split

        self.args, self.accelerator, self.model, self.processor = args, accelerator, model, processor
        self.learned_prompts, self.stage_name = learned_prompts, stage_name
        self.set_train_mode, self.save_model = set_train_mode, save_model
        spec = get_dataset_spec(args.dataset)
        task = spec.task_name(args.dataset_kwargs)
        with accelerator.local_main_process_first():  # it writes the node's load cache, the others read it
            datasets = spec.load(args.data_root, **(args.dataset_kwargs or {}))
        try:
            split = get_split(datasets, args.eval_split)
        except ValueError as error:
            raise ValueError(f"{error}: set eval_split to one of them, or eval_every: 0 (no validation)") from None
        dataset, self.class_names = single_label_split(split, spec, task, class_names, seed=args.seed)
        self.hand_prompts = spec.hand_prompts(task, self.class_names)
        self.loader = accelerator.prepare(make_loader(
            dataset, processor, shuffle=False, batch_size=args.per_device_batch_size,
            num_workers=args.dataloader_num_workers, seed=args.seed, max_length=getattr(args, "max_text_length", None)))
        self.curves: dict[str, list[tuple[int, float]]] = {name: [] for name in METRICS}
        self.best: dict[str, float] | None = None  # {"step", "value"}
        logger.info("validation every %d steps on %s (%d images, %d classes)", args.eval_every, args.eval_split,
                    len(dataset), len(self.class_names))

    # ------------------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        """The validation metrics of the current model (every process computes the same values)."""
        from ..evaluation.embeddings import compute_image_embeddings, compute_text_embeddings
        from ..evaluation.retrieval import retrieval_recall

        unwrapped = self.accelerator.unwrap_model(self.model)
        image_embeds, labels, texts = compute_image_embeddings(self.model, self.loader, self.accelerator)
        names = [name.lower() for name in self.class_names] if self.learned_prompts else self.hand_prompts
        probabilities = unwrapped.zero_shot_classify(
            image_embeds=image_embeds.to(self.accelerator.device), class_names=names, processor=self.processor,
            prompt_template=None if self.learned_prompts else "{}", use_learned_prompts=self.learned_prompts,
        ).float().cpu()
        accuracy = float((probabilities.argmax(1).numpy() == labels).mean())
        text_embeds = compute_text_embeddings(unwrapped, self.processor, texts, batch_size=self.args.per_device_batch_size)
        recall = retrieval_recall(image_embeds, text_embeds, texts, ks=(5,))["mean"][5]
        return {"zero_shot_acc": accuracy, "retrieval_r_at_5": float(recall)}

    def after_step(self, step: int) -> None:
        """Validate at multiples of `eval_every` and at the last step; log, record, keep the best model."""
        if step % self.args.eval_every and step != self.args.max_steps:
            return
        metrics = self.compute()
        self.set_train_mode(self.model)
        for name, value in metrics.items():
            self.curves[name].append((step, value))
        self.accelerator.log({f"val/{name}": value for name, value in metrics.items()}, step=step)
        logger.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        value = metrics[self.args.best_metric]
        if self.args.save_best and (self.best is None or value > self.best["value"]):
            self.best = {"step": step, "value": value}
            self.save_model(Path(self.args.output_dir) / "best_model")
            logger.info("new best %s %.4f at step %d: saved to %s/best_model", self.args.best_metric, value, step,
                        self.args.output_dir)

    # ------------------------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """What a training-state checkpoint keeps (curves and best so far), for an exact resume."""
        return {"validation": {"curves": self.curves, "best": self.best}}

    def restore(self, state: dict[str, Any]) -> None:
        saved = state.get("validation") or {}
        self.curves = {name: [tuple(p) for p in saved.get("curves", {}).get(name, [])] for name in METRICS}
        self.best = saved.get("best")

    def extend_log_writer(self, writer: Callable[[Path], None]) -> Callable[[Path], None]:
        """`writer` (training_log.json of a model folder) followed by this stage's validation entry."""

        def write(folder: Path) -> None:
            writer(folder)
            path = Path(folder) / TRAINING_LOG
            log = json.loads(path.read_text(encoding="utf-8"))
            log.setdefault("validation", {}).update(self.log_entry())
            path.write_text(json.dumps(log, indent=1), encoding="utf-8")

        return write

    def log_entry(self) -> dict[str, Any]:
        """This stage's entry under `validation` in training_log.json."""
        return {self.stage_name: {**self.curves, "best": {"metric": self.args.best_metric, **(self.best or {})}}}


__all__ = ["METRICS", "PeriodicValidation"]
