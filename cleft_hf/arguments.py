"""How every entry point reads its arguments: dataclasses parsed by transformers' `HfArgumentParser`.

    args = parse_arguments(PretrainArguments, ["--config", "cleft_hf/demo/demo.yaml", "--max_steps", "50"],
                           section="pretrain")

A YAML config (`--config`) holds a `common` section and one section per script; `common` updated by the
script's section becomes the parser's defaults (`set_defaults`), then the command line overrides them. Mapping
fields (`Mapping`-typed: `model_config`, `augmentation`, `dataset_kwargs`) take YAML on the command line
(`--augmentation "{hflip: true}"`) and update the file's mapping key by key. An unknown key, in the file or on
the command line, is an error naming the closest fields (`did you mean ...`). Field values are checked against
their types after parsing (the YAML values too); every problem is a one-line `ConfigError`.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import asdict, dataclass, field, fields
import difflib
import os
from pathlib import Path
import types
import typing
from typing import Any, Literal, TypeVar, Union

import yaml

ArgumentsT = TypeVar("ArgumentsT")
SECTIONS = ("common", "pretrain", "prompt_tune", "evaluate")
# A mapping field: a dict from YAML or Python, a YAML string on the command line (HfArgumentParser reads `str`).
Mapping = Union[dict, str, None]


class ConfigError(ValueError):
    """A bad run argument (unknown key, value of the wrong type or range, missing file); the message names it."""


def arg(default: Any, help: str) -> Any:
    """A dataclass field with its help text (`HfArgumentParser` shows it); list/dict defaults copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def did_you_mean(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown config key '{key}' ({where}){hint}")


def is_mapping(annotation: Any) -> bool:
    return (
        annotation is dict
        or typing.get_origin(annotation) is dict
        or (typing.get_origin(annotation) is Union and dict in typing.get_args(annotation))
    )


def check_value(name: str, annotation: Any, value: Any) -> Any:
    """`value` checked against the field type (ints accepted for floats, tuples for lists); names the field."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if is_mapping(annotation):
        parsed = yaml.safe_load(value) if isinstance(value, str) else value
        if parsed is None and type(None) in args:
            return None
        if not isinstance(parsed, dict):
            raise ConfigError(f"config field '{name}' expects a mapping ('{{key: value, ...}}'), got {value!r}")
        return dict(parsed)
    if origin in (Union, types.UnionType):  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return check_value(name, next(a for a in args if a is not type(None)), value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config field '{name}' must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{name}' expects a list, got {value!r}")
        return [check_value(name, args[0], item) for item in value]
    if annotation is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads `4e-5` (no dot) as a string
        except ValueError:
            pass
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"config field '{name}' expects {annotation.__name__}, got {value!r}")
    return value


def read_config_file(path: str | os.PathLike, section: str | None = None) -> dict[str, Any]:
    """A YAML config as a flat mapping: a sectioned file gives `common` updated by `section`. Other sections
    (read by other tools) are ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field names to values")
    if not any(name in loaded for name in SECTIONS):
        return loaded
    if section is None or section not in loaded:
        raise ConfigError(f"config file {path} has sections {sorted(loaded)}; it needs a '{section}' section here")
    return {**(loaded.get("common") or {}), **(loaded[section] or {})}


def _merge(cls: type, base: dict[str, Any], updates: dict[str, Any], where: str) -> dict[str, Any]:
    """`base` updated by `updates` (keys checked; mapping fields merged key by key)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    merged = dict(base)
    for key, value in updates.items():
        hint = getattr(cls, "misplaced_key_hint", lambda *_: None)(key, value) if key not in known else None
        if hint:
            raise ConfigError(f"config key '{key}' ({where}) {hint}")
        if key not in known:
            raise did_you_mean(str(key), known, where)
        if is_mapping(hints[key]) and isinstance(merged.get(key), dict) and value is not None:
            value = {**merged[key], **check_value(key, hints[key], value)}
        merged[key] = value
    return merged


def make_parser(cls: type, defaults: dict[str, Any] | None = None, config_file: bool = True):
    """An `HfArgumentParser` for `cls` with `defaults` set, `--config` (with `config_file`) and `--debug`
    listed, no abbreviations, and errors raised as `ConfigError` (one line) instead of argparse's usage screen."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str) -> typing.NoReturn:
            raise ConfigError(f"{message} (`-h` lists the fields)")

    parser = Parser(cls, allow_abbrev=False, description=(cls.__doc__ or "").strip().splitlines()[0])
    if config_file:
        parser.add_argument(
            "--config",
            metavar="PATH",
            help="YAML file of defaults (`common` + a section per script); the command line overrides it.",
        )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an error (or CLEFT_DEBUG=1).")
    parser.set_defaults(**(defaults or {}))
    return parser


def load_arguments(
    cls: type[ArgumentsT],
    config_path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    section: str | None = None,
) -> ArgumentsT:
    """`cls` from a YAML file (flat, or `section` of a sectioned file) updated by an `overrides` dict."""
    values = _merge(cls, {}, read_config_file(config_path, section), f"in {config_path}") if config_path else {}
    values = _merge(cls, values, overrides or {}, "in the overrides")
    (arguments,) = make_parser(cls).parse_dict(values)
    return arguments


def parse_arguments(
    cls: type[ArgumentsT], argv: list[str] | None = None, section: str | None = None, config_file: bool = True
) -> ArgumentsT:
    """Command line -> `cls`: `[--config PATH] [--key value ...]`; `-h` prints every field with its help."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    defaults: dict[str, Any] = {}
    if config_file:
        known, _ = make_parser(cls).parse_known_args([a for a in argv if a not in ("-h", "--help")])
        path = known.config
        defaults = _merge(cls, {}, read_config_file(path, section), f"in {path}") if path else {}
    parser = make_parser(cls, defaults, config_file)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((a for a in unknown if a.startswith("--")), unknown[0])
        name, _, value = flag.partition("=")
        key = name[2:].replace("-", "_")
        following = unknown[unknown.index(flag) + 1 :]
        value = value or (following[0] if following and not following[0].startswith("--") else None)
        hint = getattr(cls, "misplaced_key_hint", lambda *_: None)(key, value)
        if hint:
            raise ConfigError(f"config key '{key}' (from {name}) {hint}")
        raise did_you_mean(key, [f.name for f in fields(cls) if f.init], f"from {name}")
    hints = typing.get_type_hints(cls)
    values = {f.name: getattr(namespace, f.name) for f in fields(cls) if f.init}
    for name, value in values.items():  # a command-line mapping updates the file's mapping
        if is_mapping(hints[name]) and isinstance(defaults.get(name), dict) and value is not defaults[name]:
            values[name] = {**defaults[name], **(check_value(name, hints[name], value) or {})}
    return cls(**values)


def arguments_to_dict(arguments: Any) -> dict[str, Any]:
    """Plain dict ready for YAML, JSON or `accelerator.init_trackers(config=...)`."""
    return asdict(arguments)


def save_arguments(arguments: Any, path: str | os.PathLike) -> Path:
    """Write the arguments as YAML that `load_arguments` reads back to an equal object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(arguments_to_dict(arguments), sort_keys=False), encoding="utf-8")
    return path


def check_fields(arguments: Any) -> None:
    """Check (and normalise) every field of a dataclass instance against its type; call from `__post_init__`."""
    hints = typing.get_type_hints(type(arguments))
    for item in fields(arguments):
        if item.init:
            setattr(arguments, item.name, check_value(item.name, hints[item.name], getattr(arguments, item.name)))


# --------------------------------------------------------------------------------------------- shared fields
def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


_LIBRARY_CHECKS_DEFERRED = contextvars.ContextVar("cleft_library_checks_deferred", default=False)


@contextlib.contextmanager
def library_checks_deferred():
    """Arguments built inside skip `check_with_libraries`; the caller runs it later (the entry scripts: after
    the checks of model folders and the Hub token, which need no torch either)."""
    token = _LIBRARY_CHECKS_DEFERRED.set(True)
    try:
        yield
    finally:
        _LIBRARY_CHECKS_DEFERRED.reset(token)


@dataclass
class CommonArguments:
    """Fields shared by every entry script."""

    dataset: str = arg(
        "synthetic",
        "Dataset family of cleft_hf.data.registry, e.g. mimic_cxr, chexpert, embed, rsna, or synthetic "
        "(the demo's MIMIC-CXR-like tree); an unknown name is an error listing them.",
    )
    data_root: str | None = arg(None, "Folder of the dataset's files and tables (required).")
    dataset_kwargs: Mapping = arg(
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
    dtype: str | None = arg(
        None,
        "dtype of the frozen base LLM: bfloat16, float16, float32 or auto (None: bfloat16 on a GPU, float32 on "
        "CPU); trained parameters (vision tower, adapters, projections, prompts) stay float32.",
    )
    attn_implementation: str | None = arg(
        None, "Attention of the LLM: sdpa (None: the default), eager, flash_attention_2 (needs flash-attn)."
    )

    def __post_init__(self) -> None:
        check_fields(self)
        from .number_checks import check_finite_numbers

        check_finite_numbers(self)  # NaN / inf in any numeric field, named with its value
        self.check_values()
        if not _LIBRARY_CHECKS_DEFERRED.get():
            self.check_with_libraries()

    def check_values(self) -> None:
        """The checks that need no library (values, required fields, folders): all of them run before any check
        of `check_with_libraries`, so a user error answers before torch is imported. Subclasses extend both."""
        require(
            self.data_root is not None,
            f"config field 'data_root' is required (the {self.dataset} dataset's "
            "folder; for the demo data run `make demo` and use outputs/demo/data/mimic-cxr-demo)",
        )
        require(Path(self.data_root).is_dir(), f"config field 'data_root': folder {self.data_root} does not exist")
        require(self.per_device_batch_size > 0, "config field 'per_device_batch_size' must be > 0")
        require(self.dataloader_num_workers >= 0, "config field 'dataloader_num_workers' must be >= 0")
        require(
            self.dtype in (None, "bfloat16", "float16", "float32", "auto"),
            f"config field 'dtype' must be bfloat16, float16, float32 or auto, got {self.dtype!r}",
        )
        doubled = sorted({"verify", "skip_bad"} & set(self.dataset_kwargs or {}))
        require(not doubled, f"config field 'dataset_kwargs' holds {', '.join(doubled)}: use --verify / --skip_bad")

    def check_with_libraries(self) -> None:
        """The checks that import the libraries (the dataset registry here; CLEFTConfig, the transforms in the
        training arguments), after `check_values`."""
        from .data.registry import get_dataset_spec

        try:
            get_dataset_spec(self.dataset)
        except ValueError as error:
            raise ConfigError(f"config field 'dataset': {error}") from None

    @property
    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the dataset's loader: `dataset_kwargs` plus the image checks."""
        return {**(self.dataset_kwargs or {}), "verify": self.verify, "skip_bad": self.skip_bad}


__all__ = [
    "CommonArguments",
    "ConfigError",
    "Mapping",
    "arg",
    "arguments_to_dict",
    "check_fields",
    "did_you_mean",
    "load_arguments",
    "make_parser",
    "parse_arguments",
    "read_config_file",
    "require",
    "save_arguments",
]
