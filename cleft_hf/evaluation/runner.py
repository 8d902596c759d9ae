"""The evaluation of `examples/evaluate.py`: zero-shot (hand + learned prompts), linear probe, retrieval."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from ..data import get_dataset_spec, get_split, make_loader, single_label_split
from ..metrics import load_metric
from ..modeling import CLEFTModel, CLEFTProcessor
from ..training_log import loss_curves, read_training_log
from .arguments import EvaluateArguments
from .embeddings import compute_image_embeddings, compute_text_embeddings
from .linear_probe import linear_probe
from .plots import plot_confusion_matrix, plot_loss_curve, plot_roc_curves, plot_validation_curves
from .report import MetricRecord, markdown_table, write_results
from .retrieval import retrieval_recall

logger = logging.getLogger(__name__)


def hand_prompts(args: EvaluateArguments, class_names: list[str]) -> tuple[list[str], str | None]:
    """(texts, template) of the hand-written prompts: explicit per-class prompts, or the dataset's paper prompts
    (its modality's template, or `args.prompt_template`, applied to each class's text)."""
    if args.class_prompts:
        if len(args.class_prompts) != len(class_names):
            raise ValueError(f"class_prompts has {len(args.class_prompts)} prompts for {len(class_names)} classes")
        return list(args.class_prompts), "{}"
    spec = get_dataset_spec(args.dataset)
    return spec.hand_prompts(spec.task_name(args.dataset_kwargs), class_names, args.prompt_template), "{}"


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Accuracy, macro one-vs-rest AUROC and macro F1 through the local evaluate modules."""
    predictions = probabilities.argmax(1)
    return {
        "accuracy": load_metric("accuracy").compute(predictions=predictions, references=labels)["accuracy"],
        "auroc": load_metric("auroc", "multiclass").compute(
            predictions=probabilities.tolist(), references=labels.tolist(), class_names=class_names)["auroc"],
        "macro_f1": load_metric("macro_f1").compute(
            predictions=predictions, references=labels, labels=list(range(len(class_names))))["macro_f1"],
    }


def training_curves(model_dir: str) -> dict[str, Any]:
    """Loss curves of the stages that produced the model, and under `validation` their validation curves
    (`training_log.json` in a local model folder)."""
    logged = read_training_log(model_dir)
    curves = loss_curves(logged)
    if isinstance(logged.get("validation"), dict):
        curves["validation"] = logged["validation"]
    return curves


def run_evaluation(args: EvaluateArguments) -> dict[str, Any]:
    """Evaluate `args.model_name_or_path`; writes results.json, results.md and PNG plots to `output_dir`."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    output_dir = Path(args.output_dir)
    model = CLEFTModel.from_pretrained(args.model_name_or_path, dtype=args.dtype,
                                       attn_implementation=args.attn_implementation).to(accelerator.device).eval()
    processor = CLEFTProcessor.from_pretrained(args.model_name_or_path)
    spec = get_dataset_spec(args.dataset)
    task = spec.task_name(args.dataset_kwargs)
    datasets = spec.load(args.data_root, **args.loader_kwargs)
    test, class_names = single_label_split(get_split(datasets, args.eval_split), spec, task, args.class_names,
                                           args.balanced_per_class, args.seed)
    prompt_names = [name.lower() for name in class_names]  # the spelling stage 2 stores for learned prompts
    hand_texts, hand_template = hand_prompts(args, class_names)
    loader = accelerator.prepare(make_loader(test, processor, shuffle=False, batch_size=args.per_device_batch_size,
                                             num_workers=args.dataloader_num_workers, seed=args.seed))
    image_embeds, labels, texts = compute_image_embeddings(model, loader, accelerator)
    results: dict[str, Any] = {"model": str(args.model_name_or_path), "dataset": args.dataset, "task": task,
                               "split": args.eval_split, "class_names": class_names, "n_images": int(len(labels))}
    records: list[MetricRecord] = []
    plots = output_dir / "plots"
    if "zero_shot" in args.tasks:
        modes = {"hand": False}
        if model.prompt_set_names():
            modes["learned"] = True
        for prompts, learned in modes.items():
            probabilities = model.zero_shot_classify(
                image_embeds=image_embeds.to(accelerator.device), class_names=prompt_names if learned else hand_texts,
                processor=processor, prompt_template=None if learned else hand_template, use_learned_prompts=learned,
                task=task if learned and task in model.prompt_set_names() else None,
            ).float().cpu().numpy()
            records += [MetricRecord("zero_shot", metric, value, class_names, {"prompts": prompts})
                        for metric, value in classification_metrics(probabilities, labels, class_names).items()]
            if accelerator.is_main_process:
                plot_roc_curves(probabilities, labels, class_names, plots / f"roc_zero_shot_{prompts}_prompts.png",
                                title=f"zero-shot ROC, {prompts} prompts")
                plot_confusion_matrix(probabilities.argmax(1), labels, class_names,
                                      plots / f"confusion_zero_shot_{prompts}_prompts.png",
                                      title=f"zero-shot, {prompts} prompts")
    if "linear_probe" in args.tasks:
        train, _ = single_label_split(get_split(datasets, args.train_split), spec, task, class_names)
        train_loader = accelerator.prepare(make_loader(train, processor, shuffle=False, batch_size=args.per_device_batch_size,
                                                       num_workers=args.dataloader_num_workers, seed=args.seed))
        train_embeds, train_labels, _ = compute_image_embeddings(model, train_loader, accelerator)
        results["n_train_images"] = int(len(train_labels))
        probes = linear_probe(train_embeds.numpy(), train_labels, image_embeds.numpy(), labels,
                              fractions=args.linear_probe_fractions, seed=args.seed)
        for fraction, probe in probes.items():
            metrics = classification_metrics(probe["probabilities"], labels, class_names)
            records += [MetricRecord("linear_probe", metric, metrics[metric], class_names, {"label_fraction": fraction})
                        for metric in ("accuracy", "auroc")]
            records.append(MetricRecord("linear_probe", "balanced_accuracy", probe["balanced_accuracy"], class_names,
                                        {"label_fraction": fraction}))  # class-weighted probe: per-class recall mean
        if accelerator.is_main_process:
            plot_confusion_matrix(probes[max(probes)]["predictions"], labels, class_names,
                                  plots / "confusion_linear_probe.png",
                                  title=f"linear probe ({max(probes) * 100:g} % labels)")
    if "retrieval" in args.tasks:
        text_embeds = compute_text_embeddings(model, processor, texts, batch_size=args.per_device_batch_size)
        recalls = retrieval_recall(image_embeds, text_embeds, texts, ks=args.retrieval_ks)
        records += [MetricRecord("retrieval", "recall", value, None, {"k": k, "direction": direction})
                    for direction, by_k in recalls.items() for k, value in by_k.items()]
    results["metrics"] = [record.to_dict() for record in records]
    if accelerator.is_main_process:
        curves = training_curves(args.model_name_or_path)
        validation = curves.pop("validation", None)  # periodic validation during training (eval_every)
        if curves:
            plot_loss_curve(curves, plots / "training_loss.png")
        if validation:
            plot_validation_curves(validation, plots / "validation.png")
        write_results(results, output_dir)
        logger.info("results:\n%s", markdown_table(results))
    return results
