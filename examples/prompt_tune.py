"""Stage 2, context prompt learning: `accelerate launch examples/prompt_tune.py --config ... --model_name_or_path <stage-1 model>`."""

from cleft_hf.hub import maybe_push_to_hub
from cleft_hf.training.config import PromptTuneArguments, parse_arguments
from cleft_hf.training.prompt_tuning import run_prompt_tuning

if __name__ == "__main__":
    args = parse_arguments(PromptTuneArguments, section="prompt_tune")
    summary = run_prompt_tuning(args)
    maybe_push_to_hub(args, summary["model_dir"])
