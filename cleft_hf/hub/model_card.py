"""The model card of a CLEFT model: Hub metadata (`ModelCardData`, one `EvalResult` per evaluation record of
results.json) and the text rendered from the top-level `model_card.md` Jinja template. The card states what is
true of the model: base models only where pretrained weights were used, no local paths, every stage's recipe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..data.registry import DATASET_REGISTRY, MODALITIES
from ..evaluation.report import MetricRecord, metric_records
from .eval_results import NOT_EVALUATED, build_eval_results, dataset_display_name, evaluation_table, load_results
from .model_facts import parameter_counts, text_hub_id, vision_hub_id
from .training_recipe import recorded_recipes, training_stages

# The card template: the repository's top-level model_card.md (editable install), installed next to this file
# by setup.py otherwise.
TEMPLATE_PATH = next(
    (
        path
        for path in (
            Path(__file__).resolve().parent / "model_card.md",
            Path(__file__).resolve().parents[2] / "model_card.md",
        )
        if path.is_file()
    ),
    Path(__file__).resolve().parent / "model_card.md",
)
PAPER_URL = "https://arxiv.org/abs/2407.21011"
TEXT_POOLING_TEXT = {
    "last": "hidden state of the last non-padding token",
    "first_pad": "hidden state of the first padding EOS after the text, not attending to itself",
    "cls": "hidden state of the [CLS] token",
    "mean": "mean of the attended tokens' hidden states",
}
PROJECTION_TEXT = {"linear": "linear", "mlp": "MLP (Linear, BatchNorm, ReLU, Linear, BatchNorm)"}
BASE_TAGS = ["medical-imaging", "zero-shot-image-classification", "clip", "cleft", "peft"]


def _fmt_count(n: int) -> str:
    return f"{n:,}" if n < 1_000_000 else f"{n / 1e6:,.2f} M"


def _modality_tags(model: Any, *names: Any) -> list[str]:
    """Modality tags: the model's (`config.modality`, from its training data), the datasets', else its prompt's."""
    if getattr(model.config, "modality", None) in MODALITIES:
        return [model.config.modality]
    tags = [DATASET_REGISTRY[n].modality.tag for n in names if isinstance(n, str) and n in DATASET_REGISTRY]
    if not tags:
        tags = [
            tag for tag, modality in MODALITIES.items() if modality.prompt_template == model.config.prompt_template
        ]
    return list(dict.fromkeys(tags))


def _example_labels(model: Any, results: Mapping[str, Any] | None, modalities: list[str]) -> list[str]:
    """Class names for the card's code examples: the stored prompt classes, the evaluated ones, or a default."""
    if model.config.class_names:
        return list(model.config.class_names)
    for prompts in (getattr(model.config, "hand_prompts", None) or {}).values():
        return list(prompts)
    evaluated = (results or {}).get("class_names")
    if isinstance(evaluated, list) and evaluated and all(isinstance(n, str) for n in evaluated):
        return [name.lower() for name in evaluated]
    return ["atelectasis", "cardiomegaly", "edema"] if "chest-x-ray" in modalities else ["<class 1>", "<class 2>"]


def _peft_text(peft_config: Mapping[str, Any]) -> str:
    details = {k: v for k, v in peft_config.items() if k not in ("peft_type", "fan_in_fan_out")}
    return f"{peft_config['peft_type']} (`{json.dumps(details, sort_keys=True)}`)"


def _as_list(results: Any) -> list[Any]:
    """One results argument (path, dict or None) or a sequence of them (one per evaluated task)."""
    if results is None or isinstance(results, (str, os.PathLike, Mapping)):
        return [results]
    return list(results)


def _evaluation_text(results: Mapping[str, Any], records: Sequence[MetricRecord]) -> dict[str, Any]:
    """The template's view of one evaluation: where it ran and the table of its `records`."""
    return {
        "dataset": dataset_display_name(results.get("dataset")),
        "task": results.get("task"),
        "split": results.get("split"),
        "n_images": results.get("n_images"),
        "class_names": list(results.get("class_names") or []),
        "table": evaluation_table(records),
    }


def render_model_card(
    model: Any,
    *,
    results: str | os.PathLike | Mapping[str, Any] | Sequence[Any] | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    training_summary: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    save_base_model: bool | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of `model` (a `CLEFTModel`): metadata + text from the `model_card.md` template.

    `results` is results.json (path or dict; a missing file gives a card that says "not evaluated") or a list of
    them (one per evaluated task, e.g. EMBED density and BI-RADS),
    `training_summary` the run arguments of one stage or a list of them (one per stage, `"stage"` naming it;
    None: the recipes the training recorded in the model folder's `training_log.json`),
    `base_model` defaults to the Hub ids whose pretrained weights the model started from (the timm vision weights
    when used, the LLM when it came from the Hub), `save_base_model` is the weight mode of the upload (None: the
    model's own rule), `license` is left to the user.
    """
    config = model.config
    active_set = (config.prompt_sets or {}).get(config.active_prompt_set, {})
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found")
    evaluations = [r for r in map(load_results, _as_list(results)) if r]
    eval_results = [e for r in evaluations for e in build_eval_results(r)]  # [] for results without records
    results_dict = evaluations[0] if evaluations else {}
    if training_summary is None:
        training_summary = recorded_recipes(model)
    stages = training_stages(training_summary)
    if base_model is None:
        base_model = [b for b in (vision_hub_id(config), text_hub_id(config)) if b]
    base_models = [base_model] if isinstance(base_model, str) else list(base_model)
    datasets = [datasets] if isinstance(datasets, str) else (list(datasets) if datasets else None)
    summaries = [training_summary] if isinstance(training_summary, Mapping) else list(training_summary or [])
    dataset_names = [
        *(r.get("dataset") for r in evaluations),
        *(s.get("dataset") for s in summaries),
        *(datasets or []),
    ]
    modalities = _modality_tags(model, *dataset_names)
    peft_tag = config.peft_config["peft_type"].lower().replace("_", "-")
    model_name = repo_id.split("/")[-1] if repo_id else "cleft-model"
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=BASE_TAGS + [peft_tag] + modalities,
        license=license,
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        datasets=datasets,
        metrics=sorted({e.metric_type for e in eval_results}) or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    full = model.should_save_base_model(save_base_model)
    counts = parameter_counts(model)
    text_config = config.text_config
    layers = (
        getattr(text_config, "num_hidden_layers", None)
        or getattr(text_config, "n_layer", None)
        or getattr(text_config, "n_layers", None)
    )
    uploaded = sum(counts.values()) - (0 if full else counts["llm_base"])
    modality_text = " and ".join(MODALITIES[t].words for t in modalities) or "medical"
    text_hub = text_hub_id(config)
    evaluated = [_evaluation_text(r, records) for r in evaluations if (records := metric_records(r))]
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=repo_id or "CLEFT model",
        model_ref=repo_id or "path/to/this/model",
        paper_url=PAPER_URL,
        source_checkpoint=getattr(config, "source_checkpoint", None),
        text_pooling_text=TEXT_POOLING_TEXT.get(getattr(config, "text_pooling", "last"), config.text_pooling),
        projection_text=PROJECTION_TEXT[getattr(config, "projection_head", "linear")]
        + (" with bias" if getattr(config, "projection_bias", False) else ""),
        modality_text=modality_text,
        vision_model=config.vision_model_name,
        vision_hub_id=vision_hub_id(config),
        image_size=config.image_size,
        pooling_text=(
            "mean of all final tokens before the last LayerNorm"
            if config.image_pooling == "mean"
            else "normalised class token"
        ),
        text_model=text_hub,
        text_is_local=bool(config.text_model_name_or_path) and text_hub is None,
        text_family=text_config.model_type,
        text_kind="text encoder" if config.text_is_encoder else "causal LLM",
        text_is_encoder=config.text_is_encoder,
        text_trained=config.text_tower_trained,
        text_layers=layers,
        text_hidden=config.text_hidden_size,
        peft_text=_peft_text(config.peft_config),
        projection_dim=config.projection_dim,
        params={k: _fmt_count(v) for k, v in counts.items()},
        uploaded_params=_fmt_count(uploaded),
        class_names=list(config.class_names or []),
        num_context_tokens=active_set.get("prompt_num_context_tokens", config.prompt_num_context_tokens),
        class_specific=active_set.get("prompt_class_specific", config.prompt_class_specific),
        prompt_template=config.prompt_template,
        prompt_sets=[(name, model.prompt_set(name)[1]) for name in model.prompt_set_names() if name],
        hand_prompt_tasks=list(getattr(config, "hand_prompts", None) or {}),
        example_labels=_example_labels(model, results_dict, modalities),
        adapter_only=not full,
        training_stages=stages,
        not_evaluated=NOT_EVALUATED,
        evaluations=evaluated,
    )


def write_model_card(
    model_dir: str | os.PathLike,
    *,
    results: str | os.PathLike | Mapping[str, Any] | None = None,
    training_summary: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    **card_kwargs: Any,
) -> Path:
    """Render the card of the model saved in `model_dir` and write it there as `README.md` (the demo does this
    for its final model; `push_to_hub` renders its own copy)."""
    from ..modeling import CLEFTModel

    model = CLEFTModel.from_pretrained(model_dir)
    path = Path(model_dir) / "README.md"
    render_model_card(model, results=results, training_summary=training_summary, **card_kwargs).save(path)
    return path


__all__ = ["TEMPLATE_PATH", "render_model_card", "write_model_card"]
