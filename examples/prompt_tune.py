"""Stage 2, context prompt learning:

    accelerate launch --quiet examples/prompt_tune.py --config ... --model_name_or_path <stage-1 model folder>

`-h` lists every field. User errors end in one line (exit code 2); `--debug` shows the traceback.
"""

from cleft_hf.cli import run_cli
from cleft_hf.training.config import PromptTuneArguments


def main(args: PromptTuneArguments) -> dict:
    from cleft_hf.hub import maybe_push_to_hub
    from cleft_hf.training.prompt_tuning import run_prompt_tuning

    summary = run_prompt_tuning(args)
    maybe_push_to_hub(args, summary["model_dir"])
    return summary


if __name__ == "__main__":
    run_cli(main, PromptTuneArguments, section="prompt_tune")
