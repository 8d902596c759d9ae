"""`python -m cleft_hf.demo.compare`: the paper's comparison on the demo's mammography data, after `make demo`.

Trains the BERT CLIP baseline next to the demo's CLEFT and prints one table of both:
1. a demo BERT, pretrained with masked-language modelling (`pretrain_masked_lm`) on the same two corpora (CXR
   reports, EMBED captions), with the geometry (layers, width, heads, vocabulary, sequence length) and the time
   budget (the seconds it took) of the demo LLM that `make demo` wrote;
2. stage 1 of the baseline with the arguments `make demo` recorded for CLEFT's mammography stage 1 (same data,
   steps, batch, learning rate, vision tower), the text tower swapped for the demo BERT cut to its first half of
   layers ([CLS] pooling, trained whole, MLP heads: the reference code's baseline);
3. the demo's evaluation (balanced test sets) of density and BI-RADS: zero-shot with the hand (paper) prompts and
   the linear probe, beside CLEFT's from `outputs/demo/mammo/results.json`;
4. trainable parameters, the time of a training step and the peak memory of both stage-1 models, each measured
   in its own process on the same batch of demo data (`--measure`).

Tiny towers on synthetic data show the mechanics, not the paper's result: the real comparison is
`examples/configs/cxr_bert_clip.yaml` / `embed_bert_clip.yaml` beside `cxr_paper.yaml` / `embed_paper.yaml`.
Writes `--demo_dir/compare/`: `bert/` (the demo BERT), `stage1/model` (the baseline), `density/`, `birads/`
(its evaluations) and `comparison.json` / `comparison.md` (the table).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import logging
from pathlib import Path
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from ..arguments import arg, load_arguments, read_config_file
from ..cli import run_cli
from .run import DEMO_CONFIG, MAMMO_CONFIG, MAMMO_TASKS, _rarest_class_count, summarise

logger = logging.getLogger(__name__)
BASELINE_MODEL_CONFIG = {"peft_config": {"peft_type": "NONE"}, "projection_head": "mlp", "text_pooling": "cls"}
ROWS = (  # (label, key of a summary or measurement, format)
    ("trainable parameters", "trainable_params", "{:,.0f}"),
    ("training step (s, median of the timed steps)", "step_s", "{:.3f}"),
    ("peak memory of the measuring process (GB RSS)", "peak_rss_gb", "{:.2f}"),
    ("peak RSS minus RSS before loading the model (GB)", "rss_growth_gb", "{:.3f}"),
    ("density zero-shot accuracy, hand prompts", "density_zero_shot_acc_hand_prompts", "{:.3f}"),
    ("density linear probe accuracy (all labels)", "density_linear_probe_acc", "{:.3f}"),
    ("BI-RADS zero-shot accuracy, hand prompts", "birads_zero_shot_acc_hand_prompts", "{:.3f}"),
    ("BI-RADS linear probe accuracy (all labels)", "birads_linear_probe_acc", "{:.3f}"),
)


def demo_paths(demo_dir: Path) -> dict[str, Path]:
    """What `make demo` wrote and the comparison reads; a missing one ends in one line naming `make demo`."""
    paths = {
        "llm": demo_dir / "llm",
        "cxr_data": demo_dir / "data" / "mimic-cxr-demo",
        "embed_data": demo_dir / "data" / "embed-demo",
        "cleft_stage1": demo_dir / "mammo" / "stage1",
        "cleft_results": demo_dir / "mammo" / "results.json",
    }
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} not found: run `make demo` first (or pass --demo_dir of its outputs)")
    return paths


def pretrain_demo_bert(paths: dict[str, Path], output_dir: Path, seed: int) -> Any:
    """The demo BERT: masked-LM on the demo LLM's corpora, with its geometry and its time."""
    from ..data import get_dataset_spec, get_split, load_mimic_cxr
    from .language_model.masked_lm import pretrain_masked_lm

    llm_config = json.loads((paths["llm"] / "config.json").read_text())
    llm_summary = json.loads((paths["llm"] / "pretraining_summary.json").read_text())
    settings = {
        **read_config_file(DEMO_CONFIG, "language_model"),
        "num_layers": llm_config["n_layer"],
        "hidden_size": llm_config["n_embd"],
        "num_heads": llm_config["n_head"],
        "seq_len": llm_config["n_positions"],
        "vocab_size": llm_config["vocab_size"],
        "time_budget_s": max(1.0, float(llm_summary["seconds"])),
    }
    reports = list(load_mimic_cxr(paths["cxr_data"])["train"]["text"])
    captions = list(get_split(get_dataset_spec("embed").load(str(paths["embed_data"])), "train")["text"])
    return pretrain_masked_lm(reports + captions, output_dir, seed=seed, progress=False, **settings)


def baseline_arguments(paths: dict[str, Path], bert: Path, output_dir: Path) -> Any:
    """CLEFT's recorded stage-1 arguments with the demo BERT (first half of its layers) as a CLIP baseline."""
    import yaml

    from ..training.config import PretrainArguments

    recorded = yaml.safe_load((paths["cleft_stage1"] / "pretrain_args.yaml").read_text(encoding="utf-8"))
    layers = json.loads((bert / "config.json").read_text())["num_hidden_layers"]
    model_config = {key: value for key, value in recorded["model_config"].items() if key != "peft_config"}
    model_config.update(BASELINE_MODEL_CONFIG, text_model_name_or_path=str(bert), text_num_layers=max(1, layers // 2))
    values = {
        **recorded,
        "model_config": model_config,
        "output_dir": str(output_dir),
        "report_to": "none",
        "eval_every": 0,
        "resume_from_checkpoint": None,
        "push_to_hub": False,
    }
    return load_arguments(PretrainArguments, None, values)


def evaluate(model_dir: Path, paths: dict[str, Path], output_dir: Path, seed: int) -> dict[str, float]:
    """Density and BI-RADS: hand-prompt zero-shot and linear probe on the demo's balanced test sets."""
    from ..evaluation.arguments import EvaluateArguments
    from ..evaluation.runner import run_evaluation

    summary: dict[str, float] = {}
    for task in MAMMO_TASKS:
        results = run_evaluation(
            load_arguments(
                EvaluateArguments,
                MAMMO_CONFIG,
                {
                    "dataset": "embed",
                    "data_root": str(paths["embed_data"]),
                    "seed": seed,
                    "dataset_kwargs": {"task": task},
                    "output_dir": str(output_dir / task),
                    "model_name_or_path": str(model_dir),
                    "tasks": ["zero_shot", "linear_probe"],
                    "linear_probe_fractions": [1.0],
                    "balanced_per_class": _rarest_class_count(paths["embed_data"], task),
                },
                section="evaluate",
            )
        )
        summary.update(summarise(results, task))
    return summary


def measure(model_dir: str, data_root: str, batch_size: int, steps: int, seed: int) -> dict[str, float]:
    """Trainable parameters, median step time and peak RSS of `steps` stage-1 training steps (after 2 warm-up
    steps) of the model in `model_dir` on one batch of demo EMBED data, in this process."""
    import torch

    from ..data import get_dataset_spec, get_split, make_loader
    from ..modeling import CLEFTModel, CLEFTProcessor
    from ..modeling.loss_cleft import clip_loss
    from ..training.optim import build_optimizer

    torch.manual_seed(seed)
    spec = get_dataset_spec("embed")
    processor = CLEFTProcessor.from_pretrained(model_dir)
    loader = make_loader(
        get_split(spec.load(data_root), "train"),
        processor,
        shuffle=True,
        batch_size=batch_size,
        num_workers=0,
        seed=seed,
        spec=spec,
    )
    batch = next(iter(loader))
    with open("/proc/self/statm", encoding="ascii") as handle:  # resident pages now (Linux)
        rss_before_kib = int(handle.read().split()[1]) * resource.getpagesize() / 1024
    model = CLEFTModel.from_pretrained(model_dir).train()
    optimizer = build_optimizer(model)
    times = []
    for index in range(steps + 2):
        start = time.perf_counter()
        outputs = model(
            pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        clip_loss(outputs.image_embeds, outputs.text_embeds, model.logit_scale, gather=False).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= 2:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "step_s": statistics.median(times),
        "peak_rss_gb": peak / 1024**2,
        "rss_growth_gb": max(0.0, peak - rss_before_kib) / 1024**2,
        "threads": torch.get_num_threads(),
    }


def measure_in_process(model_dir: Path, data_root: Path, batch_size: int, steps: int, seed: int) -> dict:
    """`measure` in a fresh interpreter (clean peak memory)."""
    command = [
        sys.executable,
        "-m",
        "cleft_hf.demo.compare",
        "--measure",
        str(model_dir),
        "--data_root",
        str(data_root),
        "--batch_size",
        str(batch_size),
        "--steps",
        str(steps),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {model_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def comparison_table(columns: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per `ROWS` entry, one column per model."""
    names = list(columns)
    lines = [f"| | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for label, key, fmt in ROWS:
        cells = [fmt.format(columns[name][key]) if key in columns[name] else "n/a" for name in names]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


@dataclass
class CompareArguments:
    """The demo's CLEFT against a BERT CLIP baseline trained the same way (CPU, a few minutes after `make demo`)."""

    demo_dir: str = arg("outputs/demo", "Folder `make demo` wrote (its LLM, data, mammography stage 1, results).")
    seed: int = arg(0, "Seed of the demo BERT, the baseline's training and the measurements.")
    measure_steps: int = arg(5, "Timed training steps per model (after 2 warm-up steps).")
    measure: str | None = arg(None, "Internal: measure the model in this folder and print JSON.")
    data_root: str | None = arg(None, "Internal (with --measure): the EMBED-format data of the measured batch.")
    batch_size: int = arg(32, "Internal (with --measure): examples in the measured batch.")
    steps: int = arg(5, "Internal (with --measure): timed steps.")


def compare(args: CompareArguments) -> dict[str, Any]:
    """Run the comparison (or, with --measure, one measurement) and print the table."""
    if args.measure:
        result = measure(args.measure, args.data_root, args.batch_size, args.steps, args.seed)
        print(json.dumps(result))
        return result
    from ..training.contrastive_pretraining import run_pretraining

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo_dir = Path(args.demo_dir)
    paths = demo_paths(demo_dir)
    out = demo_dir / "compare"
    started = time.perf_counter()
    bert = pretrain_demo_bert(paths, out / "bert", args.seed)
    baseline_args = baseline_arguments(paths, Path(bert.path), out / "stage1")
    run_pretraining(baseline_args)
    baseline_dir = out / "stage1" / "model"
    cleft_summary = json.loads(paths["cleft_results"].read_text())
    columns = {
        "CLEFT (demo LLM + LoRA)": {k: v for k, v in cleft_summary.items() if isinstance(v, float)},
        "BERT CLIP baseline": evaluate(baseline_dir, paths, out, args.seed),
    }
    batch = baseline_args.per_device_batch_size
    for name, model_dir in zip(columns, (paths["cleft_stage1"] / "model", baseline_dir)):
        columns[name].update(measure_in_process(model_dir, paths["embed_data"], batch, args.measure_steps, args.seed))
    table = comparison_table(columns)
    seconds = round(time.perf_counter() - started, 1)
    record = {
        "columns": columns,
        "demo_bert_masked_perplexity": bert.eval_perplexity,
        "demo_bert_steps": bert.num_steps,
        "seconds": seconds,
    }
    (out / "comparison.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    (out / "comparison.md").write_text(table + "\n", encoding="utf-8")
    print(
        f"\nCLEFT vs BERT CLIP on the demo's mammography data (stage 1 as `make demo`, batch {batch}; "
        f"demo BERT: {bert.num_steps} masked-LM steps, masked-token perplexity {bert.eval_perplexity:.2f}):\n"
    )
    print(table)
    print(
        f"\nTiny towers on synthetic data: the mechanics, not the paper's result. {seconds:.0f} s; outputs: "
        f"{out.resolve()}"
    )
    return record


def main(argv: list[str] | None = None) -> None:
    run_cli(compare, CompareArguments, argv=argv, config_file=False)


if __name__ == "__main__":
    main()
