"""The evaluation of `examples/evaluate.py`: zero-shot (hand + learned prompts), linear probe, retrieval."""

from __future__ import annotations

import logging
from pathlib import Path
import shutil
from typing import Any

from accelerate import Accelerator
import numpy as np
import torch

from ..atomic_folder import publish_folder, remove_leftovers, staging_path
from ..data import get_dataset_spec, get_split, make_loader, single_label_split
from ..metrics import load_metric
from ..modeling import CLEFTModel, CLEFTProcessor
from ..run_lock import hold_output_dir
from ..training_log import loss_curves, read_training_log
from .arguments import EvaluateArguments
from .bootstrap import bootstrap_intervals, point_metrics
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


def classes_with_examples(labels: np.ndarray, class_names: list[str]) -> list[str]:
    """The classes that have at least one example in `labels` (class indices), in class order."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return [name for name, count in zip(class_names, counts) if count > 0]


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> dict[str, tuple[float, list[str]]]:
    """`{metric: (value, classes it averaged over)}`: accuracy (all classes are candidates), macro one-vs-rest
    AUROC and macro F1 over the classes that have test examples (a class without any has neither), through the
    local evaluate modules."""
    predictions = probabilities.argmax(1)
    present = classes_with_examples(labels, class_names)
    auroc = load_metric("auroc", "multiclass").compute(
        predictions=probabilities.tolist(), references=labels.tolist(), class_names=class_names
    )
    scored = [name for name in present if not np.isnan(auroc["auroc_per_class"][name])]
    return {
        "accuracy": (
            load_metric("accuracy").compute(predictions=predictions, references=labels)["accuracy"],
            list(class_names),
        ),
        "auroc": (auroc["auroc"], scored),
        "macro_f1": (
            load_metric("macro_f1").compute(
                predictions=predictions, references=labels, labels=[class_names.index(name) for name in present]
            )["macro_f1"],
            present,
        ),
    }


def zero_shot_records(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    args: EvaluateArguments,
    prompts: str,
    ensemble: list[str] | None,
    extra: dict | None = None,
) -> list[MetricRecord]:
    """The zero-shot records of one prompt mode, with `args.bootstrap`-draw 95 % intervals (none for 0)."""
    metrics = classification_metrics(probabilities, labels, class_names)
    metrics["balanced_accuracy"] = (
        point_metrics(probabilities, labels)["balanced_accuracy"],
        classes_with_examples(labels, class_names),
    )
    intervals = bootstrap_intervals(probabilities, labels, args.bootstrap, args.seed) if args.bootstrap else {}
    setting = {"prompts": prompts, **({"prompt_templates": list(ensemble)} if ensemble else {}), **(extra or {})}
    return [
        MetricRecord("zero_shot", metric, value, used, setting, *intervals.get(metric, (None, None)))
        for metric, (value, used) in metrics.items()
    ]


def paired_difference(scored: dict[str, np.ndarray], labels: np.ndarray, args: EvaluateArguments) -> dict[str, Any]:
    """Per metric learned - hand prompts and its paired bootstrap interval (the same resamples for both)."""
    learned, hand = point_metrics(scored["learned"], labels), point_metrics(scored["hand"], labels)
    intervals = bootstrap_intervals(scored["learned"], labels, args.bootstrap, args.seed, baseline=scored["hand"])
    return {
        metric: {"value": learned[metric] - hand[metric], "ci_low": low, "ci_high": high}
        for metric, (low, high) in intervals.items()
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
    """Evaluate `args.model_name_or_path`; writes results.json, results.md and PNG plots to `output_dir`.

    The output_dir is held for the whole evaluation (`cleft_hf.run_lock`: a second run on it is refused); the
    plots are written to a hidden staging folder published as `plots/` at the end, then results.md and
    results.json (each atomically, results.json last), so one folder never mixes two evaluations.
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    lock = hold_output_dir(accelerator, args.output_dir)
    plots = staging_path(Path(args.output_dir) / "plots")
    try:
        if accelerator.is_main_process:
            remove_leftovers(args.output_dir)  # staging folders of killed evaluations (we hold the lock)
        results = _evaluate(args, accelerator, plots)
        if accelerator.is_main_process:
            if plots.is_dir():
                publish_folder(plots, Path(args.output_dir) / "plots")
            write_results(results, args.output_dir)
            logger.info("results:\n%s", markdown_table(results))
        return results
    finally:
        if accelerator.is_main_process:
            shutil.rmtree(plots, ignore_errors=True)
        if lock is not None:
            lock.release()


def _evaluate(args: EvaluateArguments, accelerator: Accelerator, plots: Path) -> dict[str, Any]:
    """The evaluation itself (results dict); plots go to the folder `plots`."""
    model = (
        CLEFTModel.from_pretrained(
            args.model_name_or_path,
            dtype=args.dtype,
            attn_implementation=args.attn_implementation,
            allow_partial_weights=args.allow_partial_weights,
        )
        .to(accelerator.device)
        .eval()
    )
    processor = CLEFTProcessor.from_pretrained(args.model_name_or_path)
    spec = get_dataset_spec(args.dataset)
    task = spec.task_name(args.dataset_kwargs)
    with accelerator.local_main_process_first():  # it writes the node's load cache, the others read it
        datasets = spec.load(args.data_root, **args.loader_kwargs)
    test, class_names = single_label_split(
        get_split(datasets, args.eval_split), spec, task, args.class_names, args.balanced_per_class, args.seed
    )
    prompt_names = [name.lower() for name in class_names]  # the spelling stage 2 stores for learned prompts
    hand_texts, hand_template = hand_prompts(args, class_names)
    loader = accelerator.prepare(
        make_loader(
            test,
            processor,
            shuffle=False,
            batch_size=args.per_device_batch_size,
            num_workers=args.dataloader_num_workers,
            seed=args.seed,
        )
    )
    image_embeds, labels, texts = compute_image_embeddings(model, loader, accelerator)
    results: dict[str, Any] = {
        "model": str(args.model_name_or_path),
        "dataset": args.dataset,
        "task": task,
        "split": args.eval_split,
        "class_names": class_names,
        "n_images": int(len(labels)),
    }
    records: list[MetricRecord] = []
    missing = [name for name in class_names if name not in classes_with_examples(labels, class_names)]
    if missing:
        logger.warning(
            "no %s images of class %s: macro AUROC and macro F1 average over the other classes "
            "(each record's `classes` lists the classes it used)",
            args.eval_split,
            ", ".join(missing),
        )
        results["classes_without_examples"] = missing
    if "zero_shot" in args.tasks:
        modes = {"hand": False}
        if model.prompt_set_names():
            modes["learned"] = True
        scored = {}
        for prompts, learned in modes.items():
            ensemble = args.prompt_templates if not learned else None
            probabilities = scored[prompts] = (
                model.zero_shot_classify(
                    image_embeds=image_embeds.to(accelerator.device),
                    class_names=prompt_names if learned or ensemble else hand_texts,
                    processor=processor,
                    prompt_template=None if learned or ensemble else hand_template,
                    use_learned_prompts=learned,
                    task=task if learned and task in model.prompt_set_names() else None,
                    prompt_templates=ensemble,
                )
                .float()
                .cpu()
                .numpy()
            )
            records += zero_shot_records(probabilities, labels, class_names, args, prompts, ensemble)
            if accelerator.is_main_process:
                plot_roc_curves(
                    probabilities,
                    labels,
                    class_names,
                    plots / f"roc_zero_shot_{prompts}_prompts.png",
                    title=f"zero-shot ROC, {prompts} prompts",
                )
                plot_confusion_matrix(
                    probabilities.argmax(1),
                    labels,
                    class_names,
                    plots / f"confusion_zero_shot_{prompts}_prompts.png",
                    title=f"zero-shot, {prompts} prompts",
                )
        if args.negative_template:  # CheXzero's positive / negative pairs: per class "{}" vs "no {}"
            pairs = model.zero_shot_multilabel(
                image_embeds=image_embeds.to(accelerator.device),
                class_names=prompt_names,
                processor=processor,
                negative_template=args.negative_template,
            )
            records += zero_shot_records(
                pairs.float().cpu().numpy(),
                labels,
                class_names,
                args,
                "hand",
                None,
                {"negative_template": args.negative_template},
            )
        if args.bootstrap:
            results["bootstrap"] = {"draws": args.bootstrap, "seed": args.seed, "confidence": 0.95}
            if len(scored) == 2:
                results["zero_shot_difference"] = paired_difference(scored, labels, args)
    if "linear_probe" in args.tasks:
        train, _ = single_label_split(get_split(datasets, args.train_split), spec, task, class_names)
        train_loader = accelerator.prepare(
            make_loader(
                train,
                processor,
                shuffle=False,
                batch_size=args.per_device_batch_size,
                num_workers=args.dataloader_num_workers,
                seed=args.seed,
            )
        )
        train_embeds, train_labels, _ = compute_image_embeddings(model, train_loader, accelerator)
        results["n_train_images"] = int(len(train_labels))
        probes = linear_probe(
            train_embeds.numpy(),
            train_labels,
            image_embeds.numpy(),
            labels,
            fractions=args.linear_probe_fractions,
            seed=args.seed,
        )
        for fraction, probe in probes.items():
            metrics = classification_metrics(probe["probabilities"], labels, class_names)
            records += [
                MetricRecord("linear_probe", metric, *metrics[metric], {"label_fraction": fraction})
                for metric in ("accuracy", "auroc")
            ]
            records.append(
                MetricRecord(
                    "linear_probe",
                    "balanced_accuracy",
                    probe["balanced_accuracy"],
                    class_names,
                    {"label_fraction": fraction},
                )
            )  # class-weighted probe: per-class recall mean
        if accelerator.is_main_process:
            plot_confusion_matrix(
                probes[max(probes)]["predictions"],
                labels,
                class_names,
                plots / "confusion_linear_probe.png",
                title=f"linear probe ({max(probes) * 100:g} % labels)",
            )
    if "retrieval" in args.tasks:
        text_embeds = compute_text_embeddings(model, processor, texts, batch_size=args.per_device_batch_size)
        recalls = retrieval_recall(image_embeds, text_embeds, texts, ks=args.retrieval_ks)
        records += [
            MetricRecord("retrieval", "recall", value, None, {"k": k, "direction": direction})
            for direction, by_k in recalls.items()
            for k, value in by_k.items()
        ]
    results["metrics"] = [record.to_dict() for record in records]
    if accelerator.is_main_process:
        curves = training_curves(args.model_name_or_path)
        validation = curves.pop("validation", None)  # periodic validation during training (eval_every)
        if curves:
            plot_loss_curve(curves, plots / "training_loss.png")
        if validation:
            plot_validation_curves(validation, plots / "validation.png")
    return results
