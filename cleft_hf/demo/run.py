"""`make demo`: the whole CLEFT pipeline on the built-in demo data, on CPU, in a few minutes.

1. writes a MIMIC-CXR-JPG-like tree (images, report files, gzipped tables) with `cleft_hf.data.synthetic`;
2. pretrains a small GPT-2-family causal LM (tokenizer trained with `tokenizers`) on the training reports and
   saves it with save_pretrained, so CLEFT loads it through `from_vision_text_pretrained` as it would load
   a real LLM id;
3. stage 1 (contrastive pretraining, LoRA on the LLM), stage 2 (learned context prompts) and the evaluation,
   through the same library functions as `examples/pretrain.py`, `prompt_tune.py` and `evaluate.py`, with
   `cleft_hf/demo/demo.yaml`.

Everything goes to `--output_dir` (default `outputs/demo`): `results.json`, `results.md`, `plots/`, and
`model/` (the final model, loadable with `CLEFTModel.from_pretrained`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..arguments import arg, load_arguments
from ..cli import run_cli
from ..training.config import EvaluateArguments, PretrainArguments, PromptTuneArguments

logger = logging.getLogger(__name__)
DEMO_CONFIG = Path(__file__).resolve().parent / "demo.yaml"  # package data


def demo_data(output_dir: Path, settings: dict, seed: int) -> Path:
    """Write the demo's MIMIC-CXR-like tree once (reused when its settings and seed are unchanged)."""
    from .synthetic import write_demo_mimic_cxr

    root = output_dir / "data" / "mimic-cxr-demo"
    stamp = root / "demo_settings.json"
    wanted = {**settings, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        logger.info("reusing demo data in %s", root)
        return root
    shutil.rmtree(root, ignore_errors=True)
    summary = write_demo_mimic_cxr(root, seed=seed, **settings)
    stamp.write_text(json.dumps(wanted))
    logger.info("wrote demo data: %s", summary)
    return root


def run_demo(output_dir: str | Path = "outputs/demo", config_path: str | Path = DEMO_CONFIG, seed: int = 0) -> dict:
    """Run the demo end to end; returns the results dict (also in `output_dir/results.json`)."""
    import yaml

    from ..data import load_mimic_cxr
    from ..evaluation.runner import run_evaluation
    from ..hub import arguments_summary, write_model_card
    from ..training.contrastive_pretraining import run_pretraining
    from ..training.prompt_tuning import run_prompt_tuning
    from .language_model import pretrain_causal_lm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    timings: dict[str, float] = {}
    start = time.perf_counter()

    data_root = demo_data(output_dir, config["data"], seed)
    timings["data"] = time.perf_counter() - start

    reports = load_mimic_cxr(data_root)["train"]["text"]
    llm = pretrain_causal_lm(reports, output_dir / "llm", seed=seed, **config["language_model"])
    logger.info("demo LLM: held-out perplexity %.2f (unigram %.2f) in %.0f s", llm.eval_perplexity,
                llm.unigram_perplexity, llm.seconds)
    timings["language_model"] = time.perf_counter() - start - sum(timings.values())

    common = {"dataset": "synthetic", "data_root": str(data_root), "seed": seed}
    stage1 = load_arguments(PretrainArguments, config_path, {
        **common, "output_dir": str(output_dir / "stage1"), "model_config": {"text_model_name_or_path": str(llm.path)}}, section="pretrain")
    run_pretraining(stage1)
    timings["stage1"] = time.perf_counter() - start - sum(timings.values())

    stage2 = load_arguments(PromptTuneArguments, config_path, {
        **common, "output_dir": str(output_dir / "stage2"), "model_name_or_path": str(output_dir / "stage1" / "model")},
        section="prompt_tune")
    run_prompt_tuning(stage2)
    timings["stage2"] = time.perf_counter() - start - sum(timings.values())

    final_model = output_dir / "model"
    shutil.rmtree(final_model, ignore_errors=True)
    shutil.copytree(output_dir / "stage2" / "model", final_model)
    evaluation = load_arguments(EvaluateArguments, config_path, {
        **common, "output_dir": str(output_dir), "model_name_or_path": str(final_model)}, section="evaluate")
    results = run_evaluation(evaluation)
    timings["evaluation"] = time.perf_counter() - start - sum(timings.values())
    write_model_card(final_model, results=results, training_summary=[arguments_summary(stage1),
                                                                      arguments_summary(stage2)])
    results["demo_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    results["demo_llm_eval_perplexity"] = llm.eval_perplexity
    (output_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


@dataclass
class DemoArguments:
    """CLEFT demo on the built-in synthetic data (CPU, a few minutes)."""

    output_dir: str = arg("outputs/demo", "Folder of everything the demo writes (data, LLM, stages, results).")
    config: str = arg(str(DEMO_CONFIG), "Demo configuration (data, language_model and the script sections).")
    seed: int = arg(0, "Seed of the demo data, the LLM and the training runs.")


def demo(args: DemoArguments) -> dict:
    """Run the demo and print its results table, timings and output folder."""
    import torch

    from ..evaluation.report import markdown_table

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = run_demo(args.output_dir, args.config, args.seed)
    print(f"\nCLEFT demo results ({results['dataset']}, {results['n_images']} test images, "
          f"{len(results['class_names'])} classes):\n")
    print(markdown_table(results))
    print(f"\ntimings (s): {results['demo_seconds']}")
    print(f"outputs: {Path(args.output_dir).resolve()} (model/ with its model card README.md, results.json, "
          "results.md, plots/)")
    return results


def main(argv: list[str] | None = None) -> None:
    run_cli(demo, DemoArguments, argv=argv, config_file=False)


if __name__ == "__main__":
    main()
