"""What the model card states about a CLEFT model itself: the parameter count of each part and the Hub ids of
the pretrained weights it started from (local folders are never named)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


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
        "projections": _count(
            [
                *model.visual_projection.parameters(),
                *model.text_projection.parameters(),
                model.logit_scale,
                model.logit_bias,
            ]
        ),
        "prompts": _count(model.prompt_set()[0].parameters()) if model.prompt_set_names() else 0,  # active set
    }


def is_local_path(value: str) -> bool:
    """A file-system path rather than a Hub id ("org/name") or a setting: absolute, relative with a folder
    ("outputs/demo/llm"), or existing here."""
    return (
        os.path.isabs(value)
        or value.startswith(("./", "../", "~"))
        or value.count("/") > 1
        or "\\" in value
        or Path(value).exists()
    )


def vision_hub_id(config: Any) -> str | None:
    """Hub id of the pretrained weights the vision tower started from (`config.vision_pretrained_source`, set by
    `from_vision_text_pretrained(vision_pretrained=True)`); None for a tower trained from scratch."""
    return getattr(config, "vision_pretrained_source", None) or None


def text_hub_id(config: Any) -> str | None:
    """`config.text_model_name_or_path` when it is a Hub id (not a local folder), else None."""
    source = config.text_model_name_or_path
    if not source or is_local_path(source):
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return source


__all__ = ["is_local_path", "parameter_counts", "text_hub_id", "vision_hub_id"]
