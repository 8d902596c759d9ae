"""`make demo`: the whole CLEFT pipeline on the built-in demo data, for chest X-rays and mammograms, on CPU.

1. writes a MIMIC-CXR-JPG-like tree (images, report files, gzipped tables) and an EMBED-like tree (metadata and
   clinical tables, 12/16-bit DICOMs) with `cleft_hf.demo.synthetic`;
2. pretrains one small GPT-2-family causal LM (tokenizer trained with `tokenizers`) on both report corpora
   (CXR reports, EMBED captions built from the metadata) and saves it with save_pretrained, so CLEFT loads it
   through `from_vision_text_pretrained` as it would load a real LLM id;
3. chest X-rays: stage 1 (contrastive pretraining, LoRA on the LLM), stage 2 (learned context prompts) and the
   evaluation with `demo.yaml`; mammograms: stage 1, stage 2 for EMBED density then BI-RADS (one model, two
   named prompt sets) and both evaluations with `embed_demo.yaml`, all through the same library functions as
   `examples/pretrain.py`, `prompt_tune.py` and `evaluate.py`.

Everything goes to `--output_dir` (default `outputs/demo`): `results.json`, `results.md`, `plots/`, `model/`
(chest X-ray, loadable with `CLEFTModel.from_pretrained`), and `mammo/` (`results.json`, `model/` with both
prompt sets, per-task `density/` and `birads/` reports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import json
import logging
from pathlib import Path
import shutil
import time
from typing import Any

from ..arguments import arg, load_arguments
from ..cli import run_cli
from ..evaluation.arguments import EvaluateArguments
from ..training.config import PretrainArguments, PromptTuneArguments

logger = logging.getLogger(__name__)
DEMO_CONFIG = Path(__file__).resolve().parent / "demo.yaml"  # package data
MAMMO_CONFIG = Path(__file__).resolve().parent / "embed_demo.yaml"
MAMMO_TASKS = ("density", "birads")  # stage 2 in this order: the final model carries both prompt sets
# Flat keys of mammo/results.json (prefixed with the task) -> the evaluation record they summarise.
MAMMO_SUMMARY = {
    "zero_shot_acc_hand_prompts": ("zero-shot accuracy, hand prompts", "zero_shot", "accuracy", {"prompts": "hand"}),
    "zero_shot_acc_learned_prompts": (
        "zero-shot accuracy, learned prompts",
        "zero_shot",
        "accuracy",
        {"prompts": "learned"},
    ),
    "linear_probe_acc": ("linear probe accuracy (all labels)", "linear_probe", "accuracy", {"label_fraction": 1.0}),
    "linear_probe_balanced_acc": (
        "linear probe balanced accuracy (all labels)",
        "linear_probe",
        "balanced_accuracy",
        {"label_fraction": 1.0},
    ),
}


class Timer:
    """Per-stage wall-clock seconds, logged as each stage ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 1)
        self._last = now
        logger.info("demo stage %s: %.1f s", name, self.seconds[name])


def demo_data(root: Path, writer: Callable[..., dict], settings: dict, seed: int) -> Path:
    """Write a demo tree once (reused when its settings and seed are unchanged)."""
    stamp = root / "demo_settings.json"
    wanted = {**settings, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        logger.info("reusing demo data in %s", root)
        return root
    shutil.rmtree(root, ignore_errors=True)
    summary = writer(root, seed=seed, **settings)
    stamp.write_text(json.dumps(wanted))
    logger.info("wrote demo data: %s", summary)
    return root


def _read_yaml(path: str | Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _replace_folder(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


def pretrain(config_path: Path, common: dict[str, Any], output_dir: Path, llm_path: str) -> None:
    """Stage 1 of the config's `pretrain` section into `output_dir/stage1`, text tower from the demo LLM."""
    from ..training.contrastive_pretraining import run_pretraining

    run_pretraining(
        load_arguments(
            PretrainArguments,
            config_path,
            {
                **common,
                "output_dir": str(output_dir / "stage1"),
                "model_config": {"text_model_name_or_path": llm_path},
            },
            section="pretrain",
        )
    )


def run_chest_xray(
    output_dir: Path, config_path: Path, data_root: Path, llm_path: str, seed: int, timer: Timer
) -> dict[str, Any]:
    """Stage 1, stage 2 and evaluation on the MIMIC-CXR-like tree; `output_dir/model` is the final model."""
    from ..evaluation.runner import run_evaluation
    from ..training.prompt_tuning import run_prompt_tuning

    common = {"dataset": "synthetic", "data_root": str(data_root), "seed": seed}
    pretrain(config_path, common, output_dir, llm_path)
    timer.lap("cxr_stage1")
    run_prompt_tuning(
        load_arguments(
            PromptTuneArguments,
            config_path,
            {
                **common,
                "output_dir": str(output_dir / "stage2"),
                "model_name_or_path": str(output_dir / "stage1" / "model"),
            },
            section="prompt_tune",
        )
    )
    timer.lap("cxr_stage2")
    _replace_folder(output_dir / "stage2" / "model", output_dir / "model")
    results = run_evaluation(
        load_arguments(
            EvaluateArguments,
            config_path,
            {**common, "output_dir": str(output_dir), "model_name_or_path": str(output_dir / "model")},
            section="evaluate",
        )
    )
    timer.lap("cxr_evaluation")
    return results


def _rarest_class_count(data_root: Path, task: str, split: str = "test") -> int:
    """Images of the rarest class of `task` in `split`: the size of the balanced per-class test set."""
    import numpy as np

    from ..data import get_dataset_spec, get_split

    dataset = get_split(get_dataset_spec("embed").load(str(data_root), task=task), split)
    counts = np.bincount(np.asarray(dataset["labels"]), minlength=len(dataset.features["labels"].names))
    return int(counts.min())


def summarise(results: dict[str, Any], task: str) -> dict[str, float]:
    """The `MAMMO_SUMMARY` values of one task's evaluation results, keys prefixed with the task."""
    from ..evaluation.report import metric_records

    records = metric_records(results)
    summary = {}
    for key, (_, kind, metric, setting) in MAMMO_SUMMARY.items():
        found = [r.value for r in records if (r.task, r.metric) == (kind, metric) and dict(r.setting) == setting]
        if found:
            summary[f"{task}_{key}"] = found[0]
    return summary


def run_mammography(
    output_dir: Path, config_path: Path, data_root: Path, llm_path: str, seed: int, timer: Timer
) -> dict[str, Any]:
    """Stage 1, stage 2 for density then BI-RADS, and both evaluations (balanced test sets) on the EMBED-like
    tree. `output_dir/model` carries both learned prompt sets. Returns `{task}_*` summary values plus each task's
    full results under its name."""
    from ..evaluation.runner import run_evaluation
    from ..training.prompt_tuning import run_prompt_tuning

    common = {"dataset": "embed", "data_root": str(data_root), "seed": seed}
    pretrain(config_path, common, output_dir, llm_path)
    timer.lap("mammo_stage1")
    previous = output_dir / "stage1" / "model"
    for task in MAMMO_TASKS:
        run_prompt_tuning(
            load_arguments(
                PromptTuneArguments,
                config_path,
                {
                    **common,
                    "dataset_kwargs": {"task": task},
                    "output_dir": str(output_dir / f"stage2_{task}"),
                    "model_name_or_path": str(previous),
                },
                section="prompt_tune",
            )
        )
        previous = output_dir / f"stage2_{task}" / "model"
        timer.lap(f"mammo_stage2_{task}")
    _replace_folder(previous, output_dir / "model")
    results: dict[str, Any] = {"dataset": "embed", "model": str(output_dir / "model")}
    for task in MAMMO_TASKS:
        task_results = run_evaluation(
            load_arguments(
                EvaluateArguments,
                config_path,
                {
                    **common,
                    "dataset_kwargs": {"task": task},
                    "output_dir": str(output_dir / task),
                    "model_name_or_path": str(output_dir / "model"),
                    "balanced_per_class": _rarest_class_count(data_root, task),
                },
                section="evaluate",
            )
        )
        results.update(summarise(task_results, task))
        results[task] = task_results
        timer.lap(f"mammo_evaluation_{task}")
    return results


def run_demo(
    output_dir: str | Path = "outputs/demo",
    config_path: str | Path = DEMO_CONFIG,
    mammo_config_path: str | Path = MAMMO_CONFIG,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Run the demo end to end; returns the chest X-ray and the mammography results (also written to
    `output_dir/results.json` and `output_dir/mammo/results.json`, with the per-stage seconds)."""
    from ..data import get_dataset_spec, get_split, load_mimic_cxr
    from ..hub import write_model_card
    from .language_model import pretrain_causal_lm
    from .similarity_figures import write_similarity_figure
    from .synthetic import write_demo_embed, write_demo_mimic_cxr

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config, mammo_config = _read_yaml(config_path), _read_yaml(mammo_config_path)
    timer = Timer()
    cxr_root = demo_data(output_dir / "data" / "mimic-cxr-demo", write_demo_mimic_cxr, config["data"], seed)
    embed_root = demo_data(output_dir / "data" / "embed-demo", write_demo_embed, mammo_config["data"], seed)
    timer.lap("data")

    reports = list(load_mimic_cxr(cxr_root)["train"]["text"])
    captions = list(get_split(get_dataset_spec("embed").load(str(embed_root)), "train")["text"])
    llm = pretrain_causal_lm(reports + captions, output_dir / "llm", seed=seed, **config["language_model"])
    logger.info(
        "demo LLM: held-out perplexity %.2f (unigram %.2f) in %.0f s",
        llm.eval_perplexity,
        llm.unigram_perplexity,
        llm.seconds,
    )
    timer.lap("language_model")

    results = run_chest_xray(output_dir, Path(config_path), cxr_root, str(llm.path), seed, timer)
    mammo = run_mammography(output_dir / "mammo", Path(mammo_config_path), embed_root, str(llm.path), seed, timer)
    write_model_card(output_dir / "model", results=results)  # every stage's recipe: recorded in the model folder
    write_model_card(output_dir / "mammo" / "model", results=[mammo[task] for task in MAMMO_TASKS])
    timer.lap("model_cards")
    write_similarity_figure(
        output_dir / "model", "synthetic", cxr_root, output_dir / "plots" / "similarity_maps_cxr.png"
    )
    write_similarity_figure(
        output_dir / "mammo" / "model",
        "embed",
        embed_root,
        output_dir / "plots" / "similarity_maps_mammo.png",
        task=MAMMO_TASKS[0],
    )
    timer.lap("similarity_maps")
    seconds = {**timer.seconds, "total": round(sum(timer.seconds.values()), 1)}
    for values, folder in ((results, output_dir), (mammo, output_dir / "mammo")):
        values["demo_seconds"] = seconds
        values["demo_llm_eval_perplexity"] = llm.eval_perplexity
        (folder / "results.json").write_text(json.dumps(values, indent=2), encoding="utf-8")
    return results, mammo


MAMMO_LABELS = {"density": "density", "birads": "BI-RADS"}


def mammography_table(mammo: dict[str, Any]) -> str:
    """Markdown table of the mammography summary values."""
    lines = ["| task | result | value |", "|---|---|---:|"]
    for task in MAMMO_TASKS:
        for key, (label, *_) in MAMMO_SUMMARY.items():
            if f"{task}_{key}" in mammo:
                lines.append(f"| {MAMMO_LABELS[task]} | {label} | {mammo[f'{task}_{key}']:.3f} |")
    return "\n".join(lines)


@dataclass
class DemoArguments:
    """CLEFT demo on the built-in synthetic data, chest X-rays and mammograms (CPU, a few minutes)."""

    output_dir: str = arg("outputs/demo", "Folder of everything the demo writes (data, LLM, stages, results).")
    config: str = arg(str(DEMO_CONFIG), "Chest X-ray demo configuration (data, language_model, script sections).")
    mammo_config: str = arg(str(MAMMO_CONFIG), "Mammography demo configuration (data and the script sections).")
    seed: int = arg(0, "Seed of the demo data, the LLM and the training runs.")


def demo(args: DemoArguments) -> tuple[dict, dict]:
    """Run the demo and print its results tables, timings and output folders."""
    import torch

    from ..evaluation.report import markdown_table

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for path in (args.config, args.mammo_config):
        if not Path(path).is_file():
            raise FileNotFoundError(f"demo config {path} not found; pass an existing YAML file")
    results, mammo = run_demo(args.output_dir, args.config, args.mammo_config, args.seed)
    print(
        f"\nCLEFT demo, chest X-rays ({results['dataset']}, {results['n_images']} test images, "
        f"{len(results['class_names'])} classes):\n"
    )
    print(markdown_table(results))
    print(
        f"\nCLEFT demo, mammography (EMBED format; balanced test sets: density {mammo['density']['n_images']} "
        f"images, BI-RADS {mammo['birads']['n_images']} images):\n"
    )
    print(mammography_table(mammo))
    print(f"\ntimings (s): {results['demo_seconds']}")
    print(
        f"outputs: {Path(args.output_dir).resolve()} (model/ with its model card README.md, results.json, "
        "results.md, plots/; mammo/model/, mammo/results.json, mammo/density/, mammo/birads/)"
    )
    return results, mammo


def main(argv: list[str] | None = None) -> None:
    run_cli(demo, DemoArguments, argv=argv, config_file=False)


if __name__ == "__main__":
    main()
