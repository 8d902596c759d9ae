"""A model folder's weights must cover the model its config builds: checked on every `CLEFTModel.from_pretrained`.

transformers only warns about weights that are missing (left randomly initialised), unexpected (dropped) or of
another shape (an error deep in the loader). Here each is an error naming the keys and the folder, unless the
caller passes `allow_partial_weights=True` (then a warning). An adapter-only folder's missing base-LLM weights
are not missing (they come from `text_model_name_or_path`; the model ignores them on load). A truncated or
corrupt safetensors file is one line naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
_SHOWN = 5  # keys listed per kind in a message


def weight_files(source: str | os.PathLike) -> list[str]:
    """The safetensors files of a local model folder (names), or `[source]` itself for a Hub id."""
    folder = Path(source)
    if folder.is_dir():
        return sorted(path.name for path in folder.glob("*.safetensors")) or ["(no .safetensors file)"]
    return [str(source)]


def _listed(keys: list[Any]) -> str:
    names = [
        key if isinstance(key, str) else f"{key[0]} {tuple(key[1])} in the file, {tuple(key[2])} in the model"
        for key in keys
    ]
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def weight_problems(info: dict[str, Any]) -> list[str]:
    """Phrases for the missing / unexpected / shape-mismatched keys of transformers' `loading_info`."""
    problems = []
    for kind, words in (
        ("missing_keys", "missing"),
        ("unexpected_keys", "not in the model (dropped)"),
        ("mismatched_keys", "of another shape"),
    ):
        keys = sorted(info.get(kind) or [], key=str)
        if keys:
            problems.append(f"{len(keys)} weights {words}: {_listed(keys)}")
    return problems


def _is_unreadable_file(error: BaseException) -> bool:
    return type(error).__name__ in ("SafetensorError", "HeaderTooLarge") or "safetensors" in type(error).__module__


def load_checked(load: Callable[..., Any], source: str | os.PathLike, allow_partial_weights: bool = False) -> tuple:
    """`load(output_loading_info=True, ignore_mismatched_sizes=True)` -> `(model, loading_info)`, then raise
    `ValueError` (one line naming the folder, its weight files and the keys) when the weights do not cover the
    model, unless `allow_partial_weights`. An unreadable safetensors file raises `OSError` naming it."""
    try:
        model, info = load(output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as error:
        if not _is_unreadable_file(error):
            raise
        raise OSError(
            f"cannot read the weights of {source} ({', '.join(weight_files(source))}): "
            f"{' '.join(str(error).split())}; the file is truncated or corrupt: copy or download it again"
        ) from None
    problems = weight_problems(info)
    if problems:
        message = (
            f"the weights of {source} ({', '.join(weight_files(source))}) do not match the model its "
            f"config.json builds: {'; '.join(problems)}"
        )
        if not allow_partial_weights:
            raise ValueError(
                f"{message}. Fix config.json or the weights, or pass allow_partial_weights=True "
                "(--allow_partial_weights true) to load them anyway (the missing ones randomly "
                "initialised)"
            )
        logger.warning("%s (loaded anyway: allow_partial_weights)", message)
    return model, info


__all__ = ["load_checked", "weight_files", "weight_problems"]
