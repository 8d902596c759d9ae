"""Hub sharing: model card from results.json, the exact upload folder, push_to_hub with one commit.

Names load on first use (`from cleft_hf.hub import push_to_hub`), so the token check of an entry script
(`credentials`) does not import the model card's dependencies (the dataset registry, torch).
"""

import importlib

_HOMES = {
    "NOT_EVALUATED": "eval_results",
    "build_eval_results": "eval_results",
    "evaluation_table": "eval_results",
    "load_results": "eval_results",
    "arguments_summary": "training_recipe",
    "render_model_card": "model_card",
    "write_model_card": "model_card",
    "build_upload_folder": "upload",
    "maybe_push_to_hub": "upload",
    "push_to_hub": "upload",
    "check_repo_id": "credentials",
    "resolve_token": "credentials",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'cleft_hf.hub' has no attribute {name!r}")
