"""Stage 1, contrastive pretraining: `accelerate launch examples/pretrain.py --config examples/configs/<name>.yaml [--key value ...]`."""

from cleft_hf.hub import maybe_push_to_hub  # noqa: F401 (used below)
from cleft_hf.training.config import PretrainArguments, parse_arguments
from cleft_hf.training.contrastive_pretraining import run_pretraining

if __name__ == "__main__":
    args = parse_arguments(PretrainArguments, section="pretrain")
    summary = run_pretraining(args)
    maybe_push_to_hub(args, summary["model_dir"])
