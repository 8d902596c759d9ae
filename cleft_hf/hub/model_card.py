"""The model card of a CLEFT model: Hub metadata (`ModelCardData`, `EvalResult`s from results.json) and the text
rendered from the top-level `model_card.md` Jinja template."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..data.registry import DATASET_REGISTRY, MODALITIES

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "model_card.md"
NOT_EVALUATED = "not evaluated"
PAPER_URL = "https://arxiv.org/abs/2407.21011"
BASE_TAGS = ["medical-imaging", "zero-shot-image-classification", "clip", "cleft", "peft"]
# Non-metric fields of results.json (anything numeric starting with "n_" is a count, not a metric either).
INFO_KEYS = {"dataset", "split", "class_names", "model"}
# Sub-metric names of results.json -> (pretty name, Hub metric type, metric args).
METRICS = {
    "acc": ("accuracy", "accuracy", None),
    "auroc": ("AUROC", "roc_auc", {"average": "macro", "multi_class": "ovr"}),
    "auc": ("AUROC", "roc_auc", {"average": "macro", "multi_class": "ovr"}),
    "macro_f1": ("macro F1", "f1", {"average": "macro"}),
    "f1": ("F1", "f1", None),
}
TASKS = {
    "zero_shot": ("zero-shot-image-classification", "Zero-shot image classification"),
    "linear_probe": ("image-classification", "Linear probe on frozen image features"),
    "retrieval": ("retrieval", "Image-text retrieval"),
}
HUB_METRICS = {"accuracy", "roc_auc", "f1", "recall", "precision"}
_ZERO_SHOT = re.compile(r"zero_shot_(?P<metric>.+)_(?P<prompts>hand|learned)_prompts")
_LINEAR_PROBE = re.compile(r"linear_probe_(?P<metric>.+?)(?:_(?P<pct>\d+(?:\.\d+)?)pct)?")
_RETRIEVAL = re.compile(r"retrieval_(?:(?P<direction>[a-z0-9]+)_)?r_at_(?P<k>\d+)")
# Run-argument fields that never go into a public card: Hub plumbing, bookkeeping, bulky curves; and credentials.
_HIDDEN_SUMMARY_KEYS = {
    "push_to_hub", "hub_model_id", "loss_curve", "config", "output_dir", "logging_dir", "resume_from_checkpoint",
    "dataloader_num_workers", "save_every", "keep_last", "log_every", "report_to",
}
_CREDENTIAL_KEY = re.compile(r"(?:^|_)(?:token|api_key|password|secret)$")


@dataclass(frozen=True)
class MetricEntry:
    """One metric of results.json with its Hub description."""

    key: str
    value: float
    label: str
    task_type: str
    task_name: str
    metric_type: str
    metric_args: dict | None


# --------------------------------------------------------------------------------------------- results.json
def load_results(results: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """results.json as a dict; None when not given or when the file does not exist (the card says
    "not evaluated"). A file that is not a JSON object is an error naming it."""
    if results is None:
        return None
    if isinstance(results, Mapping):
        return dict(results)
    path = Path(results)
    if not path.is_file():
        logger.warning("results file %s not found: the model card will say the model was %s", path, NOT_EVALUATED)
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"results file {path} is not valid JSON: {error}") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"results file {path} must hold a JSON object, got {type(loaded).__name__}")
    return loaded


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sub_metric(name: str) -> tuple[str, str, dict | None]:
    """(pretty name, Hub metric type, metric args) of a sub-metric such as `acc` or `macro_f1`."""
    return METRICS.get(name, (name, _guess_metric_type(name), None))


def _describe_metric(key: str) -> tuple[str, str, str, str, dict | None] | None:
    """(label, task_type, task_name, metric_type, metric_args) of a known metric name, else None."""
    if match := _ZERO_SHOT.fullmatch(key):
        label, metric_type, args = _sub_metric(match["metric"])
        task_type, task_name = TASKS["zero_shot"]
        return (f"zero-shot {label}, {match['prompts']} prompts", task_type, task_name, metric_type,
                {**(args or {}), "prompts": match["prompts"]})
    if match := _LINEAR_PROBE.fullmatch(key):
        label, metric_type, args = _sub_metric(match["metric"])
        pct = float(match["pct"]) if match["pct"] else 100.0
        pct = int(pct) if pct.is_integer() else pct
        task_type, task_name = TASKS["linear_probe"]
        return (f"linear probe {label}, {pct} % of training labels", task_type, task_name, metric_type,
                {**(args or {}), "label_fraction_pct": pct})
    if match := _RETRIEVAL.fullmatch(key):
        direction = match["direction"]
        label = f"retrieval R@{match['k']}" + (f" ({direction})" if direction else " (mean of both directions)")
        task_type, task_name = TASKS["retrieval"]
        return label, task_type, task_name, "recall", {"k": int(match["k"]), "direction": direction or "mean"}
    return None


def _guess_metric_type(name: str) -> str:
    for token, metric_type in (("auroc", "roc_auc"), ("auc", "roc_auc"), ("f1", "f1"), ("acc", "accuracy"),
                               ("r_at", "recall"), ("recall", "recall"), ("precision", "precision")):
        if token in name:
            return metric_type
    return name


def metric_entries(results: Mapping[str, Any]) -> list[MetricEntry]:
    """Every metric of `results` in file order: known names described, other float fields kept as they are."""
    entries = []
    for key, value in results.items():
        if key in INFO_KEYS or key.startswith("n_") or not _is_number(value):
            continue
        described = _describe_metric(key)
        if described is None:
            if isinstance(value, int):  # an unknown integer is a count or a seed, not a metric
                continue
            prefix = next((p for p in TASKS if key.startswith(p + "_")), "zero_shot")
            described = (key, *TASKS[prefix], _guess_metric_type(key), None)
        entries.append(MetricEntry(key, value, *described))
    return entries


def _dataset_of(results: Mapping[str, Any]) -> tuple[str, str]:
    """(dataset type, pretty name) of results.json; metrics without a dataset are an error."""
    dataset = results.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError("results has metrics but no 'dataset' field (a non-empty string) to report them against")
    return dataset, _display_name(dataset)


def build_eval_results(results: Mapping[str, Any]) -> list[EvalResult]:
    """Hub `EvalResult`s of the finite metrics of `results` (duplicates such as `linear_probe_acc` next to
    `linear_probe_acc_100pct` with the same value are listed once)."""
    entries = [e for e in metric_entries(results) if math.isfinite(e.value)]
    if not entries:
        return []
    dataset_type, dataset_name = _dataset_of(results)
    split = results.get("split") if isinstance(results.get("split"), str) else None
    seen, evals = set(), []
    for entry in entries:
        identity = (entry.task_type, entry.metric_type, json.dumps(entry.metric_args, sort_keys=True), entry.value)
        if identity in seen:
            continue
        seen.add(identity)
        evals.append(EvalResult(
            task_type=entry.task_type, task_name=entry.task_name, dataset_type=dataset_type,
            dataset_name=dataset_name, dataset_split=split, metric_type=entry.metric_type,
            metric_value=entry.value, metric_name=entry.label, metric_args=entry.metric_args,
        ))
    return evals


def format_value(value: float) -> str:
    """A metric exactly as results.json writes it (shortest round-trip repr; NaN as NaN)."""
    return json.dumps(value)


def evaluation_table(results: Mapping[str, Any]) -> str:
    """Markdown table `| metric | results.json key | value |` of every metric in `results`."""
    lines = ["| metric | results.json key | value |", "|---|---|---:|"]
    lines += [f"| {e.label} | `{e.key}` | {format_value(e.value)} |" for e in metric_entries(results)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- model facts
def _count(parameters: Any) -> int:
    return sum(p.numel() for p in parameters)


def parameter_counts(model: Any) -> dict[str, int]:
    """Parameter counts of the towers: vision, frozen base LLM, PEFT adapter, projections + scale, prompts."""
    state = model.state_dict()
    base_keys = set(model.base_llm_state_keys())
    text_keys = [k for k in state if k.startswith("text_model.")]
    return {
        "vision": _count(model.vision_model.parameters()),
        "llm_base": sum(state[k].numel() for k in text_keys if k in base_keys),
        "adapter": sum(state[k].numel() for k in text_keys if k not in base_keys),
        "projections": _count([model.visual_projection.weight, model.text_projection.weight, model.logit_scale]),
        "prompts": _count(model.prompt_learner.parameters()),
    }


def _fmt_count(n: int) -> str:
    return f"{n:,}" if n < 1_000_000 else f"{n / 1e6:,.2f} M"


def vision_hub_id(config: Any) -> str | None:
    """Hub id of the pretrained timm weights of the vision tower (None when timm does not know them, or when
    `vision_model_kwargs` change the architecture so the pretrained weights cannot be the base)."""
    if set(config.vision_model_kwargs or {}) & {"embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio"}:
        return None
    try:
        import timm

        pretrained = timm.models.get_pretrained_cfg(config.vision_model_name)
    except (RuntimeError, ValueError, KeyError):
        return None
    return getattr(pretrained, "hf_hub_id", None) or None


def text_hub_id(config: Any) -> str | None:
    """`config.text_model_name_or_path` when it is a Hub id (not a local folder), else None."""
    source = config.text_model_name_or_path
    if not source or Path(source).exists():
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return source


def _display_name(dataset: Any) -> Any:
    spec = DATASET_REGISTRY.get(dataset) if isinstance(dataset, str) else None
    return spec.display_name if spec is not None else dataset


def _modality_tags(model: Any, *names: Any) -> list[str]:
    tags = [DATASET_REGISTRY[n].modality.tag for n in names if isinstance(n, str) and n in DATASET_REGISTRY]
    template = model.config.prompt_template.lower()
    if "chest x ray" in template or "chest x-ray" in template:
        tags.append("chest-x-ray")
    if "mammogra" in template:
        tags.append("mammography")
    return list(dict.fromkeys(tags))


def _show_summary_value(value: Any) -> str | None:
    """A run setting as card text; local paths are reduced to their last part, bulky values dropped."""
    if value is None or isinstance(value, Mapping) and not value:
        return None
    if isinstance(value, str):
        if os.path.isabs(value) or Path(value).exists():
            return f"local folder `{Path(value).name}`"
        return f"`{value}`" if value else None
    if isinstance(value, (list, tuple)):
        if len(value) > 20 or any(isinstance(v, (list, tuple, Mapping)) for v in value):
            return None
        return ", ".join(str(v) for v in value) or None
    if isinstance(value, Mapping):
        return f"`{json.dumps(value, sort_keys=True, default=str)}`"
    return str(value)


def training_rows(summary: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(setting, value) rows of a training summary / run arguments, without credentials or Hub fields."""
    rows = []
    for key, value in (summary or {}).items():
        if key in _HIDDEN_SUMMARY_KEYS or key.startswith("hub_") or _CREDENTIAL_KEY.search(key.lower()):
            continue
        shown = _show_summary_value(value)
        if shown is not None:
            rows.append((key, shown))
    return rows


def _example_labels(model: Any, results: Mapping[str, Any] | None, modalities: list[str]) -> list[str]:
    """Class names for the card's code examples: the stored prompt classes, the evaluated ones, or a default."""
    if model.config.class_names:
        return list(model.config.class_names)
    evaluated = (results or {}).get("class_names")
    if isinstance(evaluated, list) and evaluated and all(isinstance(n, str) for n in evaluated):
        return [name.lower() for name in evaluated]
    return ["atelectasis", "cardiomegaly", "edema"] if "chest-x-ray" in modalities else ["<class 1>", "<class 2>"]


def _peft_text(peft_config: Mapping[str, Any]) -> str:
    details = {k: v for k, v in peft_config.items() if k not in ("peft_type", "fan_in_fan_out")}
    return f"{peft_config['peft_type']} (`{json.dumps(details, sort_keys=True)}`)"


# --------------------------------------------------------------------------------------------- the card
def render_model_card(
    model: Any,
    *,
    results: str | os.PathLike | Mapping[str, Any] | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    training_summary: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    save_base_model: bool | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of `model` (a `CLEFTModel`): metadata + text from the `model_card.md` template.

    `results` is results.json (path or dict; a missing file gives a card that says "not evaluated"),
    `base_model` defaults to the vision tower's timm Hub id and the LLM's Hub id, `save_base_model` is the
    weight mode of the upload (None: the model's own rule), `license` is left to the user.
    """
    config = model.config
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found")
    results_dict = load_results(results)
    entries = metric_entries(results_dict) if results_dict else []
    eval_results = build_eval_results(results_dict) if entries else []
    summary = dict(training_summary or {})
    if base_model is None:
        base_model = [b for b in (vision_hub_id(config), text_hub_id(config)) if b]
    base_models = [base_model] if isinstance(base_model, str) else list(base_model)
    datasets = [datasets] if isinstance(datasets, str) else (list(datasets) if datasets else None)
    dataset_names = [(results_dict or {}).get("dataset"), summary.get("dataset"), *(datasets or [])]
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
        metrics=sorted({e.metric_type for e in eval_results} & HUB_METRICS) or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    full = model.should_save_base_model(save_base_model)
    counts = parameter_counts(model)
    text_config = config.text_config
    layers = getattr(text_config, "num_hidden_layers", None) or getattr(text_config, "n_layer", None)
    uploaded = sum(counts.values()) - (0 if full else counts["llm_base"])
    modality_text = " and ".join(MODALITIES[t].words for t in modalities) or "medical"
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=repo_id or "CLEFT model",
        model_ref=repo_id or "path/to/this/model",
        paper_url=PAPER_URL,
        modality_text=modality_text,
        vision_model=config.vision_model_name,
        vision_hub_id=vision_hub_id(config),
        image_size=config.image_size,
        pooling_text=("mean of all final tokens before the last LayerNorm" if config.image_pooling == "mean"
                      else "normalised class token"),
        text_model=config.text_model_name_or_path,
        text_family=text_config.model_type,
        text_layers=layers,
        text_hidden=config.text_hidden_size,
        peft_text=_peft_text(config.peft_config),
        projection_dim=config.projection_dim,
        params={k: _fmt_count(v) for k, v in counts.items()},
        uploaded_params=_fmt_count(uploaded),
        class_names=list(config.class_names or []),
        num_context_tokens=config.prompt_num_context_tokens,
        class_specific=config.prompt_class_specific,
        prompt_template=config.prompt_template,
        example_labels=_example_labels(model, results_dict, modalities),
        adapter_only=not full,
        text_is_local=bool(config.text_model_name_or_path) and text_hub_id(config) is None,
        training_rows=training_rows(summary),
        evaluated=bool(entries),
        not_evaluated=NOT_EVALUATED,
        eval_dataset=_display_name(results_dict.get("dataset")) if entries else None,
        eval_dataset_key=results_dict.get("dataset") if entries else None,
        eval_split=results_dict.get("split") if entries else None,
        eval_n_images=results_dict.get("n_images") if entries else None,
        eval_class_names=list(results_dict.get("class_names") or []) if entries else [],
        eval_table=evaluation_table(results_dict) if entries else "",
    )


__all__ = [
    "MetricEntry", "NOT_EVALUATED", "TEMPLATE_PATH", "build_eval_results", "evaluation_table", "load_results",
    "metric_entries", "parameter_counts", "render_model_card", "training_rows",
]
