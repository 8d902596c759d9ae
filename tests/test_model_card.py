"""The model card, offline: its metadata and table match results.json, it names pretrained weights only when they
were used, missing or bad results give a clear card or error, and the recipe rows leave out local paths and
credentials (the results.json of tests/test_hub.py)."""

from __future__ import annotations

import json
import logging
import re

from huggingface_hub import ModelCard
import pytest
from test_hub import EXPECTED_EVALS, FAKE_TOKEN, RESULTS, _with_prompts

from cleft_hf.hub import render_model_card
from cleft_hf.hub.training_recipe import training_rows


@pytest.fixture
def family():
    """The card is family-independent (test_saving covers both): GPT-2, the paper's LLM family."""
    return "gpt2"


def test_card_metadata_and_table_match_results(model, processor, tmp_path):
    _with_prompts(model, processor)
    model.config.text_model_name_or_path = str(tmp_path / "llm")  # a local LLM folder: not a base model
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(RESULTS, indent=2))
    stage1 = {
        "stage": "1 (contrastive pretraining)",
        "dataset": "chexpert",
        "max_steps": 40000,
        "data_root": str(tmp_path),
        "text_model_name_or_path": str(tmp_path / "llm"),
        "hub_token": FAKE_TOKEN,
    }
    stage2 = {
        "stage": "2 (context prompt learning)",
        "max_steps": 8000,
        "learning_rate": 1e-4,
        "per_device_batch_size": 72,
        "num_context_tokens": 30,
        "auth_token": FAKE_TOKEN,
        "push_to_hub": True,
        "loss_curve": [[1, 2.0]],
        "model_name_or_path": "outputs/stage1/model",
    }
    card = render_model_card(
        model,
        results=results_path,
        repo_id="me/cleft-card",
        training_summary=[stage1, stage2],
        datasets=["me/chexpert-captions"],
        license="apache-2.0",
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "zero-shot-image-classification"
    tags = {"medical-imaging", "zero-shot-image-classification", "clip", "cleft", "peft", "lora", "chest-x-ray"}
    assert tags <= set(data.tags)
    assert (
        "mammography" not in data.tags and data.license == "apache-2.0" and data.datasets == ["me/chexpert-captions"]
    )
    assert data.base_model is None  # a ViT trained from scratch and an LLM without a Hub id
    assert set(data.metrics) == {"accuracy", "roc_auc", "f1", "recall"}
    got = {(r.task_type, r.metric_type, r.metric_name, r.metric_value) for r in data.eval_results}
    assert got == EXPECTED_EVALS and len(data.eval_results) == len(EXPECTED_EVALS)  # one row each
    assert {(r.dataset_type, r.dataset_name, r.dataset_config, r.dataset_split) for r in data.eval_results} == {
        ("chexpert", "CheXpert", "findings", "test")
    }
    by_name = {r.metric_name: r for r in data.eval_results}
    assert by_name["linear probe accuracy, 1 % of training labels"].metric_args == {"label_fraction": 0.01}

    rows = dict(re.findall(r"^\| [^|]+ \| ([^|]+) \| (\S+) \|$", loaded.text, flags=re.MULTILINE))
    assert (
        rows["zero-shot macro F1, learned prompts"] == "n/a" and rows["zero-shot accuracy, hand prompts"] == "0.4717"
    )
    assert rows["retrieval R@5 (mean of both directions)"] == "0.0375"
    assert "600 images" in loaded.text and "`Atelectasis`, `Cardiomegaly`, `Edema`" in loaded.text
    for text in (
        "### Stage 1 (contrastive pretraining)",
        "| max_steps | 40000 |",
        "### Stage 2 (context prompt",
        "| per_device_batch_size | 72 |",
        "| num_context_tokens | 30 |",
        "not for diagnosis",
        "du2024cleft",
        "| modality | chest X-ray |",
        "no pretrained weights",
        "local folder (not on the Hub)",
        "hypothesis_template=model.config.prompt_template",
        "use_learned_prompts=True",
        'AutoModel.from_pretrained("me/cleft-card", trust_remote_code=True)',
        "`pleural effusion`",
    ):
        assert text.lower() in loaded.text.lower(), text
    for absent in (FAKE_TOKEN, str(tmp_path), "outputs/stage", "perplexity", "push_to_hub", "data_root"):
        assert absent not in loaded.content, absent


def test_card_names_pretrained_weights_only_when_used(model):
    model.config.vision_pretrained_source = "timm/vit_base_patch14_reg4_dinov2.lvd142m"
    model.config.text_model_name_or_path = "stanford-crfm/BioMedLM"
    card = render_model_card(model)
    assert card.data.base_model == ["timm/vit_base_patch14_reg4_dinov2.lvd142m", "stanford-crfm/BioMedLM"]
    assert "started from the pretrained weights [`timm/vit_base_patch14_reg4_dinov2.lvd142m`]" in card.text


def test_missing_or_bad_results(model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cleft_hf.hub"):
        card = render_model_card(model, results=tmp_path / "missing.json")
    assert "not evaluated" in card.text and "missing.json" in caplog.text
    assert card.data.eval_results is None and "model-index" not in card.content
    assert ModelCard(card.content).data.to_dict().get("model-index") is None
    bad = tmp_path / "bad.json"
    bad.write_text("[0.5, 0.6]")
    with pytest.raises(ValueError, match="bad.json must hold a JSON object"):
        render_model_card(model, results=bad)
    with pytest.raises(ValueError, match="'dataset'"):
        render_model_card(model, results={"metrics": RESULTS["metrics"]})
    with pytest.raises(ValueError, match="bad metric record"):
        render_model_card(model, results={"dataset": "rsna", "metrics": [{"task": "zero_shot"}]})
    assert "not evaluated" in render_model_card(model, results={"dataset": "rsna", "n_images": 10}).text


def test_recipe_rows_leave_out_local_paths(tmp_path):
    rows = dict(
        training_rows(
            {
                "data_root": "/data/embed",
                "learning_rate": 0.002,
                "init_text": "a photo of",
                "model_config": {
                    "text_model_name_or_path": "outputs/demo/llm",
                    "image_size": 64,
                    "vision_model_name": "vit_base_patch14_reg4_dinov2.lvd142m",
                },
                "text_model": "stanford-crfm/BioMedLM",
                "cache": str(tmp_path),
                "relative": "runs/a/b",
                "windows": "C:\\x\\y",
            }
        )
    )
    assert rows == {
        "learning_rate": "0.002",
        "init_text": "`a photo of`",
        "text_model": "`stanford-crfm/BioMedLM`",
        "model_config": '`{"image_size": 64, "vision_model_name": "vit_base_patch14_reg4_dinov2.lvd142m"}`',
    }
