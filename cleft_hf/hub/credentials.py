"""Hub credentials and repository ids, checked before any work (imports huggingface_hub only, not torch)."""

from __future__ import annotations

from typing import Any

import huggingface_hub
from huggingface_hub.errors import HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id


def check_repo_id(repo_id: Any) -> str:
    """`repo_id` if huggingface_hub accepts it as a model repository id, else a ValueError saying why."""
    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"invalid Hub repo_id {repo_id!r}: give 'user/name' or 'organisation/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid Hub repo_id {repo_id!r}: {error}") from error
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """`token`, else huggingface_hub's own (HF_TOKEN, then the login cache); a clear error when there is none."""
    resolved = token or huggingface_hub.get_token()
    if not resolved:
        raise LocalTokenNotFoundError(
            "no Hugging Face token found: run `hf auth login`, set the HF_TOKEN environment variable or pass token="
        )
    return resolved


__all__ = ["check_repo_id", "resolve_token"]
