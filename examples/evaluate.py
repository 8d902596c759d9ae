"""Evaluation (zero-shot, linear probe, retrieval):

    accelerate launch --quiet examples/evaluate.py --config ... --model_name_or_path <model folder>

`-h` lists every field. User errors end in one line (exit code 2); `--debug` shows the traceback.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path and its name would shadow the `evaluate` library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

from cleft_hf.cli import run_cli
from cleft_hf.evaluation.arguments import EvaluateArguments


def main(args: EvaluateArguments) -> dict:
    from cleft_hf.evaluation.report import markdown_table
    from cleft_hf.evaluation.runner import run_evaluation

    results = run_evaluation(args)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    run_cli(main, EvaluateArguments, section="evaluate")
