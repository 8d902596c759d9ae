"""Share a trained CLEFT model on the Hub (weights, learned prompts, processor, model card) in one commit:

    python examples/push_to_hub.py --model_dir outputs/prompt_tune/model --hub_model_id user/cleft-chexpert
        [--results outputs/eval/results.json ...] [--private] [--full_weights] [--build_only DIR]

The token comes from `hf auth login` or HF_TOKEN and is checked before the model loads. `--build_only DIR` writes
the exact upload folder and stops. The card's training section lists every stage that produced the model (recorded
in its `training_log.json`), unless `--training_summary` files are given. User errors end in one line (exit code 2); `--debug` shows the traceback.
"""

from dataclasses import dataclass
import json
import logging
from pathlib import Path

import yaml

from cleft_hf.arguments import ConfigError, arg, parse_arguments
from cleft_hf.cli import run_cli


@dataclass
class PushArguments:
    """Share a trained CLEFT model on the Hub (weights, learned prompts, processor, model card) in one commit."""

    model_dir: str | None = arg(None, "Saved CLEFT model folder (model + processor; required).")
    hub_model_id: str | None = arg(None, "Hub repository 'user/name' (required).")
    results: list[str] | None = arg(
        None,
        "results.json of the evaluation, or several (one per task, e.g. EMBED "
        "density and BI-RADS); none: the card says not evaluated.",
    )
    training_summary: list[str] | None = arg(
        None,
        "Run arguments files (.yaml or .json), one per stage in order, "
        "for the card's recipe (default: the stages recorded in the model "
        "folder's training_log.json).",
    )
    private: bool = arg(False, "Create the repository private.")
    full_weights: bool = arg(
        False, "Include the base LLM weights (default: the model's rule, adapter-only for a large LLM)."
    )
    text_model_name_or_path: str | None = arg(None, "Local base LLM for an adapter-only --model_dir.")
    license: str | None = arg(None, "Licence id for the card metadata (e.g. apache-2.0).")
    datasets: list[str] | None = arg(None, "Hub dataset ids for the card metadata.")
    revision: str | None = arg(None, "Branch to commit to (created if missing).")
    commit_message: str | None = arg(None, "Commit message.")
    build_only: str | None = arg(None, "Only write the upload folder to this folder; no upload, no token.")

    def __post_init__(self) -> None:
        for name in ("model_dir", "hub_model_id"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ConfigError(f"--model_dir {self.model_dir} is not a saved model folder (no config.json)")
        for name in ("results", "training_summary"):
            for path in getattr(self, name) or []:
                if not Path(path).is_file():
                    raise ConfigError(f"--{name}: file {path} does not exist")


def load_summary(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    summary = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(summary, dict):
        raise ConfigError(f"--training_summary {path} must hold a mapping, got {type(summary).__name__}")
    return summary


def push(args: PushArguments) -> str:
    """Build the upload folder (`--build_only`) or push; returns its path or the commit URL."""
    from cleft_hf import CLEFTModel, CLEFTProcessor
    from cleft_hf.cli import check_hub_token
    from cleft_hf.hub import build_upload_folder, check_repo_id, push_to_hub

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_repo_id(args.hub_model_id)
    token = None if args.build_only else check_hub_token(args.hub_model_id)  # fail before loading a large model
    model = CLEFTModel.from_pretrained(args.model_dir, text_model_name_or_path=args.text_model_name_or_path)
    processor = CLEFTProcessor.from_pretrained(args.model_dir)
    options = dict(
        results=args.results,
        save_base_model=True if args.full_weights else None,
        training_summary=[load_summary(path) for path in args.training_summary] if args.training_summary else None,
        license=args.license,
        datasets=args.datasets,
    )
    if args.build_only:
        folder = build_upload_folder(model, processor, args.build_only, repo_id=args.hub_model_id, **options)
        print(folder)
        return str(folder)
    url = push_to_hub(
        model,
        processor,
        args.hub_model_id,
        private=args.private,
        token=token,
        revision=args.revision,
        commit_message=args.commit_message,
        **options,
    )
    print(url)
    return url


def main(argv: list[str] | None = None) -> str:
    """Parse `argv` and push (errors raised, for callers; the script prints them as one line)."""
    return push(parse_arguments(PushArguments, argv, config_file=False))


if __name__ == "__main__":
    run_cli(push, PushArguments, config_file=False)
