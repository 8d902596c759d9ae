"""Evaluation (zero-shot, linear probe, retrieval): `accelerate launch examples/evaluate.py --config ... --model_name_or_path DIR`."""

from cleft_hf.evaluation.report import markdown_table
from cleft_hf.evaluation.runner import run_evaluation
from cleft_hf.training.config import EvaluateArguments, parse_arguments

if __name__ == "__main__":
    results = run_evaluation(parse_arguments(EvaluateArguments, section="evaluate"))
    print(markdown_table(results))
