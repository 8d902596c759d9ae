"""Evaluation (zero-shot, linear probe, retrieval): `accelerate launch examples/evaluate.py --config ... --model_name_or_path DIR`."""

import os
import sys

# Run as a script, this file's folder comes first on sys.path and its name would shadow the `evaluate` library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

from cleft_hf.evaluation.report import markdown_table  # noqa: E402
from cleft_hf.evaluation.runner import run_evaluation  # noqa: E402
from cleft_hf.training.config import EvaluateArguments, parse_arguments  # noqa: E402

if __name__ == "__main__":
    results = run_evaluation(parse_arguments(EvaluateArguments, section="evaluate"))
    print(markdown_table(results))
