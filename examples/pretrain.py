"""Stage 1, contrastive pretraining:

    accelerate launch --quiet examples/pretrain.py --config examples/configs/<name>.yaml [--key value ...]

`-h` lists every field. User errors end in one line (exit code 2); `--debug` shows the traceback.
"""

from cleft_hf.cli import run_cli
from cleft_hf.training.config import PretrainArguments


def main(args: PretrainArguments) -> dict:
    from cleft_hf.hub import maybe_push_to_hub
    from cleft_hf.training.contrastive_pretraining import run_pretraining

    summary = run_pretraining(args)
    maybe_push_to_hub(args, summary["model_dir"])
    return summary


if __name__ == "__main__":
    run_cli(main, PretrainArguments, section="pretrain")
