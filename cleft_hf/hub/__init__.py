"""Hub sharing: model card from results.json, the exact upload folder, push_to_hub with one commit."""

from .model_card import (
    NOT_EVALUATED,
    arguments_summary,
    build_eval_results,
    evaluation_table,
    load_results,
    render_model_card,
    write_model_card,
)
from .upload import (
    build_upload_folder,
    check_repo_id,
    maybe_push_to_hub,
    push_to_hub,
    resolve_token,
)

__all__ = [
    "NOT_EVALUATED",
    "arguments_summary",
    "build_eval_results",
    "build_upload_folder",
    "check_repo_id",
    "evaluation_table",
    "load_results",
    "maybe_push_to_hub",
    "push_to_hub",
    "render_model_card",
    "write_model_card",
    "resolve_token",
]
