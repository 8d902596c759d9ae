"""Sharing a CLEFT model on the Hugging Face Hub: the exact upload folder (safetensors weights, remote code,
processor, model card) built atomically, then one `HfApi.upload_folder` commit.

Tokens come from huggingface_hub's usual sources (`token=`, `HF_TOKEN`, the `hf auth login` cache) and are only
handed to `HfApi`: never printed, logged or written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import logging
import os
from pathlib import Path
import tempfile
from typing import Any

from huggingface_hub import HfApi

from ..model_folder_write import tensor_bytes, write_model_folder_safely
from .credentials import check_repo_id, resolve_token
from .model_card import render_model_card
from .training_recipe import arguments_summary, recorded_recipes

logger = logging.getLogger(__name__)

# Remote weights of an earlier push that this commit replaces (a full push followed by an adapter-only one must
# not leave stale shards or an index behind).
WEIGHT_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def _check_folder(folder: Path) -> None:
    """The folder must load with and without cleft_hf: config, card, safetensors, no pickles, remote code files."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    for required in ("config.json", "README.md", "processor_config.json"):
        if required not in names:
            raise RuntimeError(f"upload folder {folder} lacks {required}")
    if not any(name.endswith(".safetensors") for name in names):
        raise RuntimeError(f"upload folder {folder} has no .safetensors weights")
    pickles = sorted(name for name in names if name.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise RuntimeError(f"upload folder {folder} holds pickle files {pickles}: only safetensors are shared")
    auto_map = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    if "AutoModel" not in auto_map:
        raise RuntimeError(f"config.json in {folder} has no auto_map['AutoModel']: trust_remote_code would fail")
    for reference in auto_map.values():
        module_file = str(reference).split(".")[0] + ".py"
        if module_file not in names:
            raise RuntimeError(f"upload folder {folder} lacks {module_file} named by config.json auto_map")


def _refuse_token_in_files(folder: Path, token: str) -> None:
    """Abort when the token was written into any non-weight file of the upload (the name only, never the token)."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.endswith(".safetensors") and token.encode() in path.read_bytes():
            raise ValueError(
                f"the Hub token appears in {path.name} of the upload folder: refusing to upload it; "
                "remove it from that file (or from what wrote it) and upload again"
            )


def build_upload_folder(
    model: Any,
    processor: Any,
    folder: str | os.PathLike,
    *,
    results: str | os.PathLike | Mapping[str, Any] | Sequence[Any] | None = None,
    save_base_model: bool | None = None,
    overwrite: bool = False,
    **card_kwargs: Any,
) -> Path:
    """Write the exact folder a Hub upload holds and return it.

    `model.save_pretrained(save_base_model=...)` (config.json with auto_map, modeling .py files, safetensors;
    adapter-only by default above the model's `adapter_only_threshold`), `processor.save_pretrained`, and
    README.md = `render_model_card(model, results=..., **card_kwargs)`. Built in a temporary folder next to
    `folder` and renamed into place, so `folder` is either complete or absent.
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"upload folder {target} is an existing file")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"upload folder {target} already exists and is not empty (pass overwrite=True)")
    full = model.should_save_base_model(save_base_model)
    if not full and card_kwargs.get("repo_id") and Path(str(model.config.text_model_name_or_path)).exists():
        logger.warning(
            "adapter-only upload records the base LLM as the local folder %s: others must pass "
            "text_model_name_or_path= to load it (set config.text_model_name_or_path to its Hub id, or push full "
            "weights)",
            model.config.text_model_name_or_path,
        )

    def write_card(staging: Path) -> None:
        render_model_card(model, results=results, save_base_model=full, **card_kwargs).save(staging / "README.md")
        _check_folder(staging)

    base_keys = set() if full else set(model.base_llm_state_keys())
    needed = tensor_bytes({k: v for k, v in model.state_dict().items() if k not in base_keys})
    write_model_folder_safely(
        target,
        [lambda staging: model.save_pretrained(staging, save_base_model=full), processor, write_card],
        needed,
        what="the upload folder",
    )
    logger.info("built upload folder %s (%s weights)", target, "full" if full else "adapter-only")
    return target


def push_to_hub(
    model: Any,
    processor: Any,
    repo_id: str,
    *,
    results: str | os.PathLike | Mapping[str, Any] | Sequence[Any] | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    save_base_model: bool | None = None,
    revision: str | None = None,
    **card_kwargs: Any,
) -> str:
    """Upload `model` + `processor` + model card to the Hub model repository `repo_id`; returns the commit url.

    Creates the repository if needed (`private` only applies on creation), then makes one commit with
    `HfApi.upload_folder` of the folder `build_upload_folder` writes (earlier weight files of the repository
    are replaced). `card_kwargs` go to `render_model_card` (training_summary, datasets, base_model, license).
    """
    check_repo_id(repo_id)
    token = resolve_token(token)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="cleft-upload-") as tmp:
        folder = build_upload_folder(
            model,
            processor,
            Path(tmp) / "upload",
            results=results,
            save_base_model=save_base_model,
            repo_id=repo_id,
            **card_kwargs,
        )
        _refuse_token_in_files(folder, token)
        adapter_only = not json.loads((folder / "config.json").read_text())["checkpoint_has_base_model"]
        files = sorted(p for p in folder.iterdir() if p.is_file())
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        logger.info("uploading %d files (%.1f MB) to %s", len(files), size_mb, repo_id)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        target_id = getattr(repo_url, "repo_id", None) or repo_id
        if revision and revision != "main":
            api.create_branch(target_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=target_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message
            or f"Upload CLEFT model ({'adapter-only' if adapter_only else 'full'} weights)",
            delete_patterns=WEIGHT_PATTERNS,
        )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("uploaded %s: %s", repo_id, url)
    return url


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def maybe_push_to_hub(
    args: Any,
    model: Any,
    processor: Any = None,
    results_path: str | os.PathLike | None = None,
    *,
    training_summary: Mapping[str, Any] | None = None,
) -> str | None:
    """Push when `args.push_to_hub` (repo `args.hub_model_id`); None otherwise or on non-main processes.

    `model` is a `CLEFTModel` (then `processor` is required) or a saved model folder (model and processor are
    loaded from it). The card's recipe table comes from `training_summary`, else from the folder's recorded
    recipes (every stage that produced it), else from `args` itself.
    Optional `args` fields: `hub_private_repo`, `hub_revision`, `save_base_model`.
    """
    if not getattr(args, "push_to_hub", False):
        return None
    repo_id = check_repo_id(getattr(args, "hub_model_id", None))
    if not _is_main_process():
        return None
    folder = isinstance(model, (str, os.PathLike))
    if folder:
        from ..modeling import CLEFTModel, CLEFTProcessor

        processor = processor if processor is not None else CLEFTProcessor.from_pretrained(model)
        model = CLEFTModel.from_pretrained(model)
    if processor is None:
        raise ValueError("maybe_push_to_hub needs the processor (or a saved model folder holding one)")
    if training_summary is None and not (folder and recorded_recipes(model)):  # a folder of a training run
        training_summary = arguments_summary(args)  # records every stage's recipe; else this run's arguments
    return push_to_hub(
        model,
        processor,
        repo_id,
        results=results_path,
        private=bool(getattr(args, "hub_private_repo", False)),
        save_base_model=getattr(args, "save_base_model", None),
        revision=getattr(args, "hub_revision", None),
        training_summary=training_summary,
    )


__all__ = [
    "WEIGHT_PATTERNS",
    "build_upload_folder",
    "maybe_push_to_hub",
    "push_to_hub",
]
