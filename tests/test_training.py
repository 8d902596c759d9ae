"""Both training stages and the evaluation on the demo data format: short CPU runs, resume, NaN stop."""

from __future__ import annotations

import json
from pathlib import Path
import shutil

from conftest import tiny_run_overrides
from huggingface_hub import ModelCard
import pytest
from safetensors.torch import load_file
import torch
import yaml

from cleft_hf import CLEFTModel
from cleft_hf.arguments import load_arguments
from cleft_hf.data import load_mimic_cxr
from cleft_hf.data.collator import ImageTextCollator
from cleft_hf.evaluation.arguments import EvaluateArguments
from cleft_hf.evaluation.runner import run_evaluation
from cleft_hf.hub import write_model_card
from cleft_hf.training import contrastive_pretraining, run_log
from cleft_hf.training.checkpointing import list_checkpoints
from cleft_hf.training.config import PretrainArguments, PromptTuneArguments
from cleft_hf.training.contrastive_pretraining import run_pretraining
from cleft_hf.training.prompt_tuning import run_prompt_tuning
from cleft_hf.training.step_loop import NonFiniteLossError

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "cleft_hf" / "demo" / "demo.yaml"


def _pretrain_args(demo_tree, demo_llm, output_dir, **extra) -> PretrainArguments:
    overrides = {**tiny_run_overrides(demo_tree, demo_llm, output_dir), **extra}
    return load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, demo_tree, demo_llm):
    output = tmp_path_factory.mktemp("stage1")
    summary = run_pretraining(_pretrain_args(demo_tree, demo_llm, output))
    return output, summary


def test_stage1_writes_a_loadable_model_and_checkpoints(stage1):
    output, summary = stage1
    model = CLEFTModel.from_pretrained(output / "model")
    assert model.config.text_config.n_layer == 2 and (output / "model" / "tokenizer.json").is_file()
    assert [step for step, _ in list_checkpoints(output)] == [2, 4]
    assert len(summary["loss_curve"]) == 4 and all(torch.isfinite(torch.tensor(l)) for _, l in summary["loss_curve"])
    log = json.loads((output / "model" / "training_log.json").read_text())
    assert (
        list(log) == ["stage 1 (contrastive)", "skipped_images", "recipes"] and len(log["stage 1 (contrastive)"]) == 4
    )
    assert log["skipped_images"] == {"stage 1 (contrastive)": {"count": 0, "files": []}}
    recipe = log["recipes"]["stage 1 (contrastive)"]  # the run's arguments, for the model card
    assert recipe["stage"] == "1 (contrastive pretraining)" and recipe["max_steps"] == 4


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, demo_tree, demo_llm, monkeypatch):
    # Exact resumption holds for everything in the saved state (weights, optimiser, schedule, torch RNG: LoRA
    # dropout, data order). Random choices made while loading data (augmentation, label-caption swaps) are
    # not part of it (the loader prefetches one batch ahead), so both are off here.
    uninterrupted = tmp_path / "uninterrupted"
    run_pretraining(_pretrain_args(demo_tree, demo_llm, uninterrupted, augment=False, label_caption_prob=0.0))
    interrupted = tmp_path / "interrupted"
    original_end_step = run_log.TrainingLog.end_step

    def crash_after_step_2(self, step, lr, progress=None):
        original_end_step(self, step, lr, progress)
        if step == 3:  # after the checkpoint of step 2 and one more step: simulate a pre-emption
            raise KeyboardInterrupt

    monkeypatch.setattr(run_log.TrainingLog, "end_step", crash_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(_pretrain_args(demo_tree, demo_llm, interrupted, augment=False, label_caption_prob=0.0))
    assert not (interrupted / "model").exists()
    monkeypatch.setattr(run_log.TrainingLog, "end_step", original_end_step)
    run_pretraining(
        _pretrain_args(
            demo_tree, demo_llm, interrupted, augment=False, label_caption_prob=0.0, resume_from_checkpoint="latest"
        )
    )
    resumed = load_file(interrupted / "model" / "model.safetensors")
    reference = load_file(uninterrupted / "model" / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=1e-6, msg=key)


def test_siglip_stage1_with_accumulation_and_label_captions(tmp_path, demo_tree, demo_llm, monkeypatch):
    calls, texts = [], []
    original_loss, original_collate = contrastive_pretraining.contrastive_loss_fn, ImageTextCollator.__call__
    monkeypatch.setattr(
        contrastive_pretraining, "contrastive_loss_fn", lambda *args: calls.append(1) or original_loss(*args)
    )
    monkeypatch.setattr(
        ImageTextCollator,
        "__call__",
        lambda self, rows: (batch := original_collate(self, rows), texts.extend(batch["text"]))[0],
    )
    summary = run_pretraining(
        _pretrain_args(
            demo_tree,
            demo_llm,
            tmp_path,
            loss="siglip",
            gradient_accumulation_steps=2,
            label_caption_prob=1.0,
            dataloader_num_workers=0,
        )
    )
    assert len(summary["loss_curve"]) == 4 and len(calls) == 8  # 4 optimiser steps of 2 micro-batches each
    reports = set(load_mimic_cxr(demo_tree)["train"]["text"])
    assert texts and not set(texts) & reports  # every report swapped for its label caption
    assert all(text.startswith("this is a chest x ray of a patient with") for text in texts)
    model = CLEFTModel.from_pretrained(tmp_path / "model")
    assert model.logit_bias.item() != -10.0 and model.logit_bias.requires_grad is False  # trained, saved, frozen again
    assert model.logit_scale.exp().item() != pytest.approx(10.0, abs=0)


def test_non_finite_loss_stops_with_the_step_after_saving_state(tmp_path, demo_tree, demo_llm, monkeypatch):
    original = contrastive_pretraining.contrastive_loss_fn
    calls = []

    def nan_on_second_call(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(contrastive_pretraining, "contrastive_loss_fn", nan_on_second_call)
    with pytest.raises(NonFiniteLossError, match="step 2"):
        run_pretraining(_pretrain_args(demo_tree, demo_llm, tmp_path))
    assert (tmp_path / "checkpoints" / "nonfinite_step_2").is_dir()


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, demo_tree, stage1):
    output = tmp_path_factory.mktemp("stage2")
    args = load_arguments(
        PromptTuneArguments,
        DEMO_CONFIG,
        {
            "dataset": "synthetic",
            "data_root": str(demo_tree),
            "output_dir": str(output),
            "report_to": "none",
            "model_name_or_path": str(stage1[0] / "model"),
            "per_device_batch_size": 8,
            "max_steps": 6,
            "warmup_steps": 1,
            "num_context_tokens": 3,
            "log_every": 2,
        },
        section="prompt_tune",
    )
    return output, run_prompt_tuning(args)


def test_stage2_saves_learned_prompts_into_the_model(stage1, stage2):
    output, summary = stage2
    before = CLEFTModel.from_pretrained(stage1[0] / "model")
    after = CLEFTModel.from_pretrained(output / "model")
    assert summary["class_names"] == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert after.config.class_names == [name.lower() for name in summary["class_names"]]  # prompt spelling
    assert after.prompt_learner.ctx.shape == (3, after.text_embed_dim)
    assert len(after.config.prompt_class_token_ids) == 5
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items()):
        if not name.startswith("prompt_sets."):  # freeze_vision (demo config): nothing else moves
            assert torch.equal(a, b), name
    log = json.loads((output / "model" / "training_log.json").read_text())
    assert [name for name in log if name not in ("skipped_images", "recipes")] == [
        "stage 1 (contrastive)",
        "stage 2 (prompts)",
        "validation",
    ]  # demo.yaml: eval_every
    assert list(log["recipes"]) == ["stage 1 (contrastive)", "stage 2 (prompts)"]  # both stages' arguments


def test_batched_class_prompts_equal_per_image_computation(stage2):
    model = CLEFTModel.from_pretrained(stage2[0] / "model").eval()
    images = torch.nn.functional.normalize(torch.randn(3, model.config.projection_dim), dim=-1)
    batched = model(image_embeds=images, use_learned_prompts=True).logits_per_image  # prompts encoded once
    ids, mask = model.stored_class_inputs()
    for row in range(images.shape[0]):
        for cls in range(ids.shape[0]):
            n = int(mask[cls].sum())
            single = model(
                image_embeds=images[row : row + 1], input_ids=ids[cls : cls + 1, :n], use_learned_prompts=True
            ).logits_per_image
            torch.testing.assert_close(single[0, 0], batched[row, cls], atol=1e-5, rtol=1e-5)


TEMPLATES = ["a chest x ray showing {}.", "findings consistent with {}."]


def test_evaluation_writes_results_table_and_plots(tmp_path, demo_tree, stage2):
    args = load_arguments(
        EvaluateArguments,
        DEMO_CONFIG,
        {
            "dataset": "synthetic",
            "data_root": str(demo_tree),
            "output_dir": str(tmp_path),
            "model_name_or_path": str(stage2[0] / "model"),
            "per_device_batch_size": 16,
            "dataloader_num_workers": 0,
            "linear_probe_fractions": [0.5, 1.0],
            "prompt_templates": TEMPLATES,
            "negative_template": "no {}",
        },
        section="evaluate",
    )
    results = run_evaluation(args)
    saved = json.loads((tmp_path / "results.json").read_text())
    records = {(r["task"], r["metric"], json.dumps(r["setting"], sort_keys=True)): r for r in saved["metrics"]}
    assert (
        len(records) == len(saved["metrics"]) == 3 * 4 + 2 * 3 + 3 * 3
    )  # one record per result (probe: accuracy, auroc, balanced accuracy)
    settings = [
        {"prompts": "hand", "prompt_templates": TEMPLATES},
        {"prompts": "learned"},
        {"prompts": "hand", "negative_template": "no {}"},
    ]  # ensemble, learned, positive / negative pairs
    for setting in settings:
        for metric in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):  # with 1000-draw bootstrap intervals
            record = records[("zero_shot", metric, json.dumps(setting, sort_keys=True))]
            assert 0.0 <= record["ci_low"] <= record["value"] <= record["ci_high"] <= 1.0, record
            assert record["classes"] == saved["class_names"]
    assert saved["bootstrap"] == {"draws": 1000, "seed": args.seed, "confidence": 0.95}
    for diff in saved["zero_shot_difference"].values():  # learned - hand, paired
        assert -1.0 <= diff["ci_low"] <= diff["value"] <= diff["ci_high"] <= 1.0, diff
    assert 0.0 <= records[("retrieval", "recall", '{"direction": "mean", "k": 5}')]["value"] <= 1.0
    assert saved == json.loads(json.dumps(results))
    assert saved["n_images"] == 20 and saved["class_names"][0] == "Atelectasis"
    for name in (
        "roc_zero_shot_hand_prompts",
        "roc_zero_shot_learned_prompts",
        "confusion_zero_shot_hand_prompts",
        "confusion_linear_probe",
        "training_loss",
        "validation",
    ):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000, name
    table = (tmp_path / "results.md").read_text()
    assert "| zero-shot accuracy, hand prompts (2 templates) |" in table and "learned - hand prompts (paired)" in table


def test_demo_model_card_states_what_is_true(tmp_path, demo_tree, stage1, stage2):
    """The card the demo writes for its final model (two stages, from-scratch ViT, local LLM), parsed back."""
    model_dir = tmp_path / "model"
    shutil.copytree(stage2[0] / "model", model_dir)
    args = load_arguments(
        EvaluateArguments,
        DEMO_CONFIG,
        {
            "dataset": "synthetic",
            "data_root": str(demo_tree),
            "output_dir": str(tmp_path / "eval"),
            "model_name_or_path": str(model_dir),
            "per_device_batch_size": 16,
            "dataloader_num_workers": 0,
            "tasks": ["zero_shot", "linear_probe"],
            "linear_probe_fractions": [1.0],
        },
        section="evaluate",
    )
    results = {**run_evaluation(args), "demo_llm_eval_perplexity": 12.5}
    # no training_summary: both stages' recipes come from the model folder (recorded by the training runs)
    card = ModelCard.load(write_model_card(model_dir, results=results))
    assert card.data.base_model is None and "chest-x-ray" in card.data.tags
    evals = card.data.eval_results  # huggingface_hub parsed the model-index back into EvalResults
    assert len(evals) == len(results["metrics"]) == 2 * 4 + 3  # zero-shot (hand, learned) x 4, probe x 3
    for result in evals:
        assert result.task_type in ("zero-shot-image-classification", "image-classification"), result.metric_name
        assert result.dataset_type == "synthetic" and result.dataset_split == "test"
        assert result.metric_value == round(result.metric_value, 4)
    assert len({(r.task_type, r.metric_name) for r in evals}) == len(evals)
    assert (
        "### Stage 1 (contrastive pretraining)" in card.text and "### Stage 2 (context prompt learning)" in card.text
    )
    stage1_recipe = yaml.safe_load((stage1[0] / "pretrain_args.yaml").read_text())
    assert (
        f"| learning_rate | {stage1_recipe['learning_rate']:g} |" in card.text
        or f"| learning_rate | {stage1_recipe['learning_rate']} |" in card.text
    )
    for absent in (str(tmp_path), str(demo_tree), "perplexity", "local_files_only"):
        assert absent not in card.content, absent
    assert "local_files_only" not in (model_dir / "tokenizer_config.json").read_text()
