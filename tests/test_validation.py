"""Periodic validation during both stages: curves in training_log.json and the trackers, best model kept, plot."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import tiny_run_overrides
import pytest

from cleft_hf import CLEFTModel
from cleft_hf.arguments import load_arguments
from cleft_hf.evaluation.plots import plot_validation_curves
from cleft_hf.training.config import PretrainArguments, PromptTuneArguments
from cleft_hf.training.contrastive_pretraining import run_pretraining
from cleft_hf.training.prompt_tuning import run_prompt_tuning

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "cleft_hf" / "demo" / "demo.yaml"


@pytest.fixture(scope="module")
def validated_stage1(tmp_path_factory, demo_tree, demo_llm):
    output = tmp_path_factory.mktemp("validated-stage1")
    overrides = {
        **tiny_run_overrides(demo_tree, demo_llm, output),
        "eval_every": 2,
        "max_steps": 5,
        "save_every": 0,
        "report_to": "tensorboard",
    }
    return output, run_pretraining(load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain"))


def test_stage1_validates_every_n_steps_and_after_the_last(validated_stage1):
    output, summary = validated_stage1
    log = json.loads((output / "model" / "training_log.json").read_text())
    entry = log["validation"]["stage 1 (contrastive)"]
    assert entry == json.loads(json.dumps(summary["validation"]))
    for metric in ("zero_shot_acc", "retrieval_r_at_5"):
        assert [step for step, _ in entry[metric]] == [2, 4, 5]
        assert all(0.0 <= value <= 1.0 for _, value in entry[metric])
    accuracies = [value for _, value in entry["zero_shot_acc"]]
    assert entry["best"]["metric"] == "zero_shot_acc" and entry["best"]["value"] == max(accuracies)
    assert entry["best"]["step"] == [s for s, v in entry["zero_shot_acc"] if v == max(accuracies)][0]
    best = CLEFTModel.from_pretrained(output / "best_model")  # a full model folder, loadable
    assert best.config.projection_dim == 16 and (output / "best_model" / "training_log.json").is_file()
    events = list((output / "logs").rglob("events.out.tfevents.*"))
    assert events and any(b"val/zero_shot_acc" in path.read_bytes() for path in events)  # the tracker got them


def test_stage2_validates_with_learned_prompts_and_keeps_stage1_curves(validated_stage1, tmp_path, demo_tree):
    output, _ = validated_stage1
    args = load_arguments(
        PromptTuneArguments,
        DEMO_CONFIG,
        {
            "data_root": str(demo_tree),
            "output_dir": str(tmp_path),
            "report_to": "none",
            "model_name_or_path": str(output / "model"),
            "per_device_batch_size": 8,
            "max_steps": 3,
            "warmup_steps": 1,
            "num_context_tokens": 3,
            "eval_every": 2,
            "save_best": False,
        },
        section="prompt_tune",
    )
    summary = run_prompt_tuning(args)
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert list(log["validation"]) == ["stage 1 (contrastive)", "stage 2 (prompts)"]
    assert [step for step, _ in summary["validation"]["zero_shot_acc"]] == [2, 3]
    assert summary["validation"]["best"] == {"metric": "zero_shot_acc"} and not (tmp_path / "best_model").exists()
    figure = plot_validation_curves(log["validation"], tmp_path / "validation.png")
    assert figure.stat().st_size > 1000


def test_a_missing_validation_split_is_named_before_training(tmp_path, demo_tree, demo_llm):
    overrides = {**tiny_run_overrides(demo_tree, demo_llm, tmp_path), "eval_every": 2, "eval_split": "dev"}
    with pytest.raises(ValueError, match="split 'dev' not found.*eval_every: 0"):
        run_pretraining(load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain"))
    assert not (tmp_path / "checkpoints").exists()
