"""Share a trained CLEFT model on the Hub (weights, learned prompts, processor, model card) in one commit:

    python examples/push_to_hub.py --model_dir outputs/prompt_tune/model --hub_model_id user/cleft-chexpert
        [--results outputs/eval/results.json] [--private] [--full_weights] [--build_only DIR]

The token comes from `hf auth login` or HF_TOKEN. `--build_only DIR` writes the exact upload folder and stops.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.hub import build_upload_folder, check_repo_id, push_to_hub, resolve_token


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="Saved CLEFT model folder (model + processor).")
    parser.add_argument("--hub_model_id", required=True, help="Hub repository 'user/name'.")
    parser.add_argument("--results", help="results.json of the evaluation (missing: the card says not evaluated).")
    parser.add_argument("--training_summary", help="Run arguments or summary (.yaml or .json) for the card's recipe.")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument("--full_weights", action="store_true", help="Include the base LLM weights (default: the "
                        "model's rule, adapter-only for a large LLM).")
    parser.add_argument("--text_model_name_or_path", help="Local base LLM for an adapter-only --model_dir.")
    parser.add_argument("--license", help="Licence id for the card metadata (e.g. apache-2.0).")
    parser.add_argument("--datasets", nargs="*", help="Hub dataset ids for the card metadata.")
    parser.add_argument("--revision", help="Branch to commit to (created if missing).")
    parser.add_argument("--commit_message", help="Commit message.")
    parser.add_argument("--build_only", metavar="DIR", help="Only write the upload folder to DIR; no upload.")
    return parser.parse_args(argv)


def load_summary(path: str | None) -> dict | None:
    if path is None:
        return None
    text = Path(path).read_text(encoding="utf-8")
    summary = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(summary, dict):
        raise ValueError(f"--training_summary {path} must hold a mapping, got {type(summary).__name__}")
    return summary


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_repo_id(args.hub_model_id)
    if not (Path(args.model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--model_dir {args.model_dir} is not a saved model folder (no config.json)")
    token = None if args.build_only else resolve_token()  # fail before loading a large model
    model = CLEFTModel.from_pretrained(args.model_dir, text_model_name_or_path=args.text_model_name_or_path)
    processor = CLEFTProcessor.from_pretrained(args.model_dir)
    options = dict(
        results=args.results, save_base_model=True if args.full_weights else None,
        training_summary=load_summary(args.training_summary), license=args.license, datasets=args.datasets,
    )
    if args.build_only:
        folder = build_upload_folder(model, processor, args.build_only, repo_id=args.hub_model_id, **options)
        print(folder)
        return str(folder)
    url = push_to_hub(model, processor, args.hub_model_id, private=args.private, token=token,
                      revision=args.revision, commit_message=args.commit_message, **options)
    print(url)
    return url


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as error:  # bad input: one line, no traceback
        raise SystemExit(f"error: {error}") from None
