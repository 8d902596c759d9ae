"""Run arguments of the three entry scripts: dataclasses loaded from a YAML file plus `--key value` overrides.

    args = parse_arguments(PretrainArguments, ["--config", "cleft_hf/demo/demo.yaml", "--max_steps=50"])

Values are converted to the field types (int, float, bool, str, Optional, Literal choices, list/tuple; on the
command line lists are comma-separated: `--betas 0.9,0.98`). An unknown key is an error naming it and the
closest field names; a value that does not fit its type is an error naming the field. Mixed precision,
number of processes and the distributed backend come from `accelerate launch` / its config file.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
import difflib
import os
from pathlib import Path
import sys
import types
import typing
from typing import Any, Literal, Optional, TypeVar, Union

import yaml

from ..data.registry import dataset_names, get_dataset_spec

ArgumentsT = TypeVar("ArgumentsT")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
DATASETS = dataset_names()
EVALUATION_TASKS = ("zero_shot", "linear_probe", "retrieval")


def arg(default: Any, help: str) -> Any:
    """A dataclass field with its help text (peft style); list defaults get a fresh copy per instance."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


# --------------------------------------------------------------------------------------------- type conversion
def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _describe(a) for a in args)
    if annotation is dict or origin is dict:
        return "a mapping (CLI: '{key: value, ...}')"
    if origin in (list, tuple):
        inner = _describe(args[0]) if args else "value"
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"{len(args)} {inner} values"
        return f"a list of {inner}"
    return getattr(annotation, "__name__", str(annotation))


def _convert_scalar(annotation: Any, value: Any) -> Any:
    """Convert one value to `annotation` (bool, int, float, str); raise TypeError/ValueError if it does not fit."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if annotation is int:
        if isinstance(value, bool):
            raise TypeError
        number = float(value) if isinstance(value, str) and not value.strip().lstrip("+-").isdigit() else value
        if isinstance(number, str):
            return int(number)
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(f"unsupported field type {annotation}")


def convert_value(name: str, annotation: Any, value: Any, source: str) -> Any:
    """`value` (from YAML or a command-line string) converted to the field type `annotation`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    try:
        if origin in (Union, types.UnionType):
            if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
                if type(None) in args:
                    return None
                raise ValueError
            inner = [a for a in args if a is not type(None)]
            try:
                return convert_value(name, inner[0], value, source)
            except ConfigFieldError:
                raise ValueError from None  # reported below with the full Optional[...] description
        if origin is Literal:
            if value not in args:
                raise ValueError
            return value
        if annotation is dict or origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    value = yaml.safe_load(text)
                else:
                    value = [item.strip() for item in text.split(",") if item.strip()]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise ValueError
                return tuple(_convert_scalar(a, v) for a, v in zip(args, value))
            items = [convert_value(name, args[0], v, source) for v in value] if args else list(value)
            return tuple(items) if origin is tuple else items
        return _convert_scalar(annotation, value)
    except (TypeError, ValueError, yaml.YAMLError) as error:
        if isinstance(error, ConfigFieldError):
            raise
        expected = _describe(annotation)
        raise ConfigFieldError(f"config field '{name}' ({source}) expects {expected}, got {value!r}") from None


class ConfigFieldError(ValueError):
    """A value that does not fit its field (the message names the field and where the value came from)."""


# --------------------------------------------------------------------------------------------- loading
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if f.init}


def _unknown_key_error(key: str, known: list[str], source: str) -> ValueError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(known))}"
    return ValueError(f"unknown config key '{key}' ({source}){hint}")


BARE_FLAG = "<bare flag>"


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`["--a", "1", "--b=x", "--flag"]` -> `{"a": "1", "b": "x", "flag": BARE_FLAG}` (bools read it as True)."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or token == "--":
            raise ValueError(f"unexpected argument {token!r}: options look like --key value or --key=value")
        key, has_value, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not has_value:
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or following.startswith("--"):
                value = BARE_FLAG
            else:
                value = following
                index += 1
        overrides[key] = value
        index += 1
    return overrides


SECTIONS = ("common", "pretrain", "prompt_tune", "evaluate")


def read_config_file(path: str | os.PathLike, section: str | None = None) -> dict[str, Any]:
    """A YAML config as a flat mapping. A file with sections (`common`, `pretrain`, `prompt_tune`, `evaluate`,
    plus any sections other tools read, e.g. the demo's `data`) gives `common` updated by `section`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping of field names to values")
    if not any(name in loaded for name in SECTIONS):
        return loaded
    if section is None or section not in loaded:
        raise ValueError(f"config file {path} has sections {sorted(loaded)}; it needs a '{section}' section here")
    return {**(loaded.get("common") or {}), **(loaded[section] or {})}


def load_arguments(
    cls: type[ArgumentsT],
    config_path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    section: str | None = None,
) -> ArgumentsT:
    """Build `cls` from a YAML file (flat, or `section` of a sectioned file) and overrides (a dict or a
    `--key value` list)."""
    types_by_name = _field_types(cls)
    known = list(types_by_name)
    values: dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path)
        loaded = read_config_file(path, section)
        for key, value in loaded.items():
            if key not in types_by_name:
                raise _unknown_key_error(str(key), known, f"in {path}")
            values[key] = convert_value(key, types_by_name[key], value, f"in {path}")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key, value in (overrides or {}).items():
        if key not in types_by_name:
            raise _unknown_key_error(key, known, f"from --{key}")
        if value is BARE_FLAG:
            if types_by_name[key] is not bool:
                raise ValueError(f"config field '{key}' (from --{key}) needs a value: --{key} VALUE or --{key}=VALUE")
            value = True
        values[key] = convert_value(key, types_by_name[key], value, f"from --{key}")
    return cls(**values)


def format_help(cls: type) -> str:
    """One block per field: `--name TYPE (default: X)` and its help text."""
    title = f"{cls.__name__}: " + (cls.__doc__ or "").strip().splitlines()[0]
    lines = [title, "", "  --config PATH  YAML file of defaults"]
    types_by_name = _field_types(cls)
    for item in fields(cls):
        default = item.default if item.default is not MISSING else item.default_factory()
        lines.append(f"  --{item.name} {_describe(types_by_name[item.name])} (default: {default!r})")
        lines.append(f"      {item.metadata.get('help', '')}")
    return "\n".join(lines) + "\n"


def parse_arguments(cls: type[ArgumentsT], argv: list[str] | None = None, section: str | None = None) -> ArgumentsT:
    """Command line -> `cls`: `[--config PATH] [--key value | --key=value ...]`; `-h/--help` prints the fields."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(format_help(cls))
        raise SystemExit(0)
    config_path = None
    remaining = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--config":
            if index + 1 >= len(argv):
                raise ValueError("--config needs a path to a YAML file")
            config_path, index = argv[index + 1], index + 2
            continue
        if token.startswith("--config="):
            config_path = token.split("=", 1)[1]
        else:
            remaining.append(token)
        index += 1
    return load_arguments(cls, config_path, remaining, section=section)


def arguments_to_dict(arguments: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) ready for YAML, JSON or `accelerator.init_trackers(config=...)`."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(arguments).items()}


def save_arguments(arguments: Any, path: str | os.PathLike) -> Path:
    """Write the arguments as YAML that `load_arguments` reads back to an equal object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(arguments_to_dict(arguments), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- argument classes
def _positive(arguments: Any, *names: str) -> None:
    for name in names:
        if getattr(arguments, name) <= 0:
            raise ValueError(f"config field '{name}' must be > 0, got {getattr(arguments, name)!r}")


@dataclass
class _CommonArguments:
    """Fields shared by every entry script."""

    dataset: str = arg(
        "synthetic", f"Dataset family (cleft_hf.data.registry): {', '.join(DATASETS)} (synthetic: the built-in demo)."
    )
    data_root: Optional[str] = arg(None, "Folder of the dataset's files and tables (required unless synthetic).")
    dataset_kwargs: Optional[dict] = arg(
        None, "Extra loader options, e.g. {sections: [impression]} (MIMIC-CXR), {uncertain: ones}, {task: density}."
    )
    verify: Literal["none", "exists", "header", "decode"] = arg(
        "exists", "Image file check when the dataset is loaded: none, exists, header (reads headers) or decode (all)."
    )
    skip_bad: bool = arg(
        False, "Skip and count unreadable images (at load time and when decoded in the loader) instead of stopping."
    )
    output_dir: str = arg("outputs/run", "Run folder: checkpoints, logs, final model, results.")
    seed: int = arg(42, "Seed of python, numpy and torch RNGs (accelerate.utils.set_seed).")
    per_device_batch_size: int = arg(72, "Examples per process per forward pass.")
    dataloader_num_workers: int = arg(2, "DataLoader worker processes per training process.")
    dtype: Optional[str] = arg(
        None, "dtype of the frozen base LLM: bfloat16, float16, float32 or auto (None: bfloat16 on a GPU, float32 on "
        "CPU); trained parameters (vision tower, adapters, projections, prompts) stay float32."
    )
    attn_implementation: Optional[str] = arg(
        None, "Attention of the LLM: sdpa (None: the default), eager, flash_attention_2 (needs flash-attn)."
    )

    def __post_init__(self) -> None:
        for name, annotation in _field_types(type(self)).items():
            setattr(self, name, convert_value(name, annotation, getattr(self, name), "value"))
        get_dataset_spec(self.dataset)  # an unknown name is an error listing the known ones
        if self.dataset != "synthetic" and self.data_root is None:
            raise ValueError(f"config field 'data_root' is required for dataset '{self.dataset}'")
        if self.data_root is not None and not Path(self.data_root).exists():
            raise FileNotFoundError(f"config field 'data_root': folder {self.data_root} does not exist")
        _positive(self, "per_device_batch_size")
        if self.dtype not in (None, "bfloat16", "float16", "float32", "auto"):
            raise ValueError(f"config field 'dtype' must be bfloat16, float16, float32 or auto, got {self.dtype!r}")
        doubled = sorted({"verify", "skip_bad"} & set(self.dataset_kwargs or {}))
        if doubled:
            raise ValueError(f"config field 'dataset_kwargs' holds {', '.join(doubled)}: use --verify / --skip_bad")
        if self.dataloader_num_workers < 0:
            raise ValueError(f"config field 'dataloader_num_workers' must be >= 0, got {self.dataloader_num_workers}")


    @property
    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the dataset's loader: `dataset_kwargs` plus the image checks."""
        return {**(self.dataset_kwargs or {}), "verify": self.verify, "skip_bad": self.skip_bad}


@dataclass
class _TrainingArguments(_CommonArguments):
    """Optimisation, checkpointing and logging fields of both training stages."""

    train_split: str = arg("train", "Split used for training.")
    eval_split: Optional[str] = arg("validation", "Split for periodic evaluation (None: none).")
    optimizer: Literal["adamw", "sgd"] = arg("adamw", "Optimiser: adamw or sgd (momentum).")
    learning_rate: float = arg(4e-5, "Peak learning rate after warm-up.")
    weight_decay: float = arg(0.1, "Weight decay; never on biases, norms, logit scale, prompt context.")
    betas: tuple[float, float] = arg((0.9, 0.999), "AdamW betas (CLI: 0.9,0.999).")
    momentum: float = arg(0.9, "SGD momentum.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = arg("cosine", "Decay after the linear warm-up.")
    min_lr_ratio: float = arg(0.0, "Final learning rate as a fraction of the peak (cosine).")
    warmup_steps: int = arg(4000, "Linear warm-up length in optimiser steps.")
    max_steps: int = arg(40000, "Total optimiser steps.")
    gradient_accumulation_steps: int = arg(
        1,
        "Micro-batches per optimiser step. Each micro-batch is its own contrastive problem (its negatives come "
        "from that micro-batch on all processes), so this is not the same as a larger batch.",
    )
    max_grad_norm: Optional[float] = arg(1.0, "Gradient clipping norm (None or 0: no clipping).")
    save_every: int = arg(1000, "Save the training state every N optimiser steps (0: never).")
    keep_last: int = arg(3, "Training-state checkpoints kept (<= 0: all).")
    resume_from_checkpoint: Optional[str] = arg(
        None, "'latest' (newest in output_dir/checkpoints, if any) or a checkpoint folder."
    )
    allow_inexact_resume: bool = arg(
        False, "Resume even when the checkpoint's random states cannot be restored (with a warning; not exact)."
    )
    log_every: int = arg(10, "Log loss and learning rate every N optimiser steps.")
    report_to: str = arg("tensorboard", "Accelerate trackers, comma-separated (tensorboard, wandb, ...) or 'none'.")
    push_to_hub: bool = arg(False, "Upload the final model to the Hugging Face Hub.")
    hub_model_id: Optional[str] = arg(None, "Hub repository 'user/name' for push_to_hub.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "learning_rate", "max_steps", "gradient_accumulation_steps", "log_every")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"config field 'warmup_steps' must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"config field 'min_lr_ratio' must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.save_every < 0:
            raise ValueError("config fields 'weight_decay' and 'save_every' must be >= 0")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("config field 'hub_model_id' is required when push_to_hub is true")

    @property
    def trackers(self) -> list[str]:
        """`report_to` as the list `Accelerator(log_with=...)` takes (empty for 'none')."""
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return [] if names in ([], ["none"]) else names


@dataclass
class PretrainArguments(_TrainingArguments):
    """Stage 1: contrastive pretraining of the vision tower + PEFT adapters of the LLM (paper recipe defaults)."""

    vision_model_name: str = arg("vit_base_patch14_reg4_dinov2.lvd142m", "timm name of the image encoder.")
    vision_pretrained: bool = arg(True, "Start from timm's pretrained weights (needs them cached).")
    vision_model_kwargs: Optional[dict] = arg(None, "Extra timm.create_model kwargs, e.g. {drop_path_rate: 0.1}.")
    image_size: int = arg(224, "Input crop size in pixels.")
    image_pooling: Literal["mean", "cls"] = arg("mean", "Image feature: mean of all final tokens (paper) or CLS.")
    text_model_name_or_path: str = arg("stanford-crfm/BioMedLM", "Causal LLM (Hub id or folder) used as text encoder.")
    max_text_length: int = arg(256, "Report tokens kept (truncation length).")
    peft_type: Literal["lora", "ia3", "prefix_tuning", "adalora"] = arg("lora", "PEFT method applied to the LLM.")
    peft_r: int = arg(8, "LoRA/AdaLoRA rank (prefix tuning: number of virtual tokens).")
    peft_alpha: int = arg(32, "LoRA alpha.")
    peft_dropout: float = arg(0.1, "LoRA dropout.")
    peft_target_modules: Optional[list[str]] = arg(None, "Modules to adapt (None: peft's default, e.g. c_attn).")
    projection_dim: int = arg(512, "Size of the shared image-text embedding space.")
    gradient_checkpointing: bool = arg(True, "Recompute LLM activations in backward.")
    label_caption_prob: float = arg(
        0.0, "Probability of training on the caption built from an image's labels instead of its report "
        "(the reference code's CheXpert captions; multi-label datasets)."
    )
    augment: bool = arg(True, "Augment training images (false: the deterministic eval transform).")
    augmentation: Optional[dict] = arg(
        None,
        "Train transform options of cleft_hf.data.transforms (scale, ratio, max_rotation, max_translate, "
        "brightness, contrast, hflip, text_augment, otsu_crop); None: its defaults.",
    )
    loss: Literal["clip", "siglip"] = arg("clip", "Symmetric InfoNCE (clip) or sigmoid (siglip).")
    gather_negatives: bool = arg(True, "Use the other processes' embeddings as negatives (reference code: false).")
    dedup_identical_texts: bool = arg(True, "Identical captions in a global batch count as positives.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "image_size", "max_text_length", "peft_r", "projection_dim")
        if not 0.0 <= self.peft_dropout < 1.0:
            raise ValueError(f"config field 'peft_dropout' must be in [0, 1), got {self.peft_dropout}")


@dataclass
class PromptTuneArguments(_TrainingArguments):
    """Stage 2: learn context prompts on top of a frozen stage-1 text side (reference recipe defaults)."""

    model_name_or_path: Optional[str] = arg(None, "Stage-1 model folder or Hub id (required).")
    optimizer: Literal["adamw", "sgd"] = arg("sgd", "Optimiser: adamw or sgd (momentum).")
    learning_rate: float = arg(1e-4, "Peak learning rate after warm-up.")
    min_lr_ratio: float = arg(0.1, "Final learning rate as a fraction of the peak (1e-4 -> 1e-5).")
    weight_decay: float = arg(1e-3, "Weight decay (not applied to the prompt context).")
    warmup_steps: int = arg(100, "Linear warm-up length in optimiser steps.")
    max_steps: int = arg(8000, "Total optimiser steps.")
    num_context_tokens: int = arg(30, "Learned context tokens placed before the class name.")
    class_specific: bool = arg(False, "One context per class instead of one shared context.")
    init_text: Optional[str] = arg(
        None,
        "Text whose token embeddings initialise the context, repeated to fill it (None: the model's, i.e. the "
        "dataset's prompt without the class, e.g. 'this is a chest x ray of a patient with'; empty: random).",
    )
    freeze_vision: bool = arg(False, "Freeze the vision tower, cache image features (reference: it trains).")
    class_names: Optional[list[str]] = arg(None, "Classes to learn prompts for (None: the dataset's).")
    loss: Literal["clip", "bce"] = arg("bce", "Multi-label BCE over class prompts, or InfoNCE on label texts.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("config field 'model_name_or_path' (the stage-1 model) is required")
        _positive(self, "num_context_tokens")


@dataclass
class EvaluateArguments(_CommonArguments):
    """Evaluation: zero-shot (hand and learned prompts), linear probe on frozen features, retrieval."""

    model_name_or_path: Optional[str] = arg(None, "Model folder or Hub id to evaluate (required).")
    per_device_batch_size: int = arg(64, "Examples per process per forward pass.")
    train_split: str = arg("train", "Split the linear probe trains on.")
    eval_split: str = arg("test", "Split evaluated.")
    tasks: list[str] = arg(list(EVALUATION_TASKS), "Any of zero_shot, linear_probe, retrieval.")
    class_names: Optional[list[str]] = arg(None, "Classes for zero-shot (None: the dataset's).")
    class_prompts: Optional[list[str]] = arg(
        None, "Hand prompts, one per class, instead of prompt_template (default for embed: the paper's prompts)."
    )
    balanced_per_class: Optional[int] = arg(
        None, "Evaluate on a balanced subset with this many images per class (200: CheXpert 5x200; None: all)."
    )
    prompt_template: Optional[str] = arg(None, "Hand prompt with {} for the class (None: the model's template).")
    linear_probe_fractions: list[float] = arg([0.01, 0.1, 1.0], "Fractions of training labels for the probe.")
    retrieval_ks: list[int] = arg([1, 5, 10], "K values of recall@K.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("config field 'model_name_or_path' (the model to evaluate) is required")
        unknown = [task for task in self.tasks if task not in EVALUATION_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"config field 'tasks' takes {', '.join(EVALUATION_TASKS)}; got {self.tasks}")
        if any(not 0.0 < fraction <= 1.0 for fraction in self.linear_probe_fractions):
            fractions = self.linear_probe_fractions
            raise ValueError(f"config field 'linear_probe_fractions' must be in (0, 1], got {fractions}")
        if any(k < 1 for k in self.retrieval_ks):
            raise ValueError(f"config field 'retrieval_ks' must be >= 1, got {self.retrieval_ks}")
        if self.prompt_template is not None and "{}" not in self.prompt_template:
            raise ValueError(f"config field 'prompt_template' must contain '{{}}', got {self.prompt_template!r}")


__all__ = [
    "DATASETS",
    "EVALUATION_TASKS",
    "EvaluateArguments",
    "PretrainArguments",
    "PromptTuneArguments",
    "arguments_to_dict",
    "convert_value",
    "format_help",
    "load_arguments",
    "parse_arguments",
    "parse_overrides",
    "BARE_FLAG",
    "ConfigFieldError",
    "save_arguments",
]
