"""Stage 2 on single-label (EMBED) and multi-label (MIMIC-CXR format) data, both losses, vision frozen or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.arguments import load_arguments
from cleft_hf.data import get_dataset_spec
from cleft_hf.training.config import PromptTuneArguments
from cleft_hf.training.prompt_tuning import run_prompt_tuning

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "cleft_hf" / "demo" / "demo.yaml"


def test_stage1_on_mammograms_gives_a_mammography_model(embed_stage1):
    config = CLEFTModel.from_pretrained(embed_stage1).config
    assert config.prompt_template == get_dataset_spec("embed").prompt_template
    assert "chest" not in config.prompt_template and "chest" not in config.prompt_init_text


def _stage2(model_dir, output, dataset, data_root, **extra):
    args = load_arguments(
        PromptTuneArguments,
        DEMO_CONFIG,
        {
            "dataset": dataset,
            "data_root": str(data_root),
            "output_dir": str(output),
            "report_to": "none",
            "model_name_or_path": str(model_dir),
            "per_device_batch_size": 8,
            "max_steps": 3,
            "warmup_steps": 1,
            "num_context_tokens": 3,
            "log_every": 1,
            "eval_every": 0,
            **extra,
        },
        section="prompt_tune",
    )
    return run_prompt_tuning(args)


@pytest.mark.parametrize("loss", ["clip", "bce"])
@pytest.mark.parametrize("freeze_vision", [True, False])
def test_stage2_on_single_label_mammography(tmp_path, embed_tree, embed_stage1, loss, freeze_vision):
    summary = _stage2(
        embed_stage1,
        tmp_path,
        "embed",
        embed_tree,
        loss=loss,
        freeze_vision=freeze_vision,
        dataset_kwargs={"task": "density"},
    )
    assert all(torch.isfinite(torch.tensor(value)) for _, value in summary["loss_curve"])
    model = CLEFTModel.from_pretrained(tmp_path / "model")
    before = CLEFTModel.from_pretrained(embed_stage1)
    assert model.config.class_names == list(get_dataset_spec("embed").task("density").class_names)
    before.setup_prompt_learning(
        model.config.class_names, CLEFTProcessor.from_pretrained(embed_stage1), num_context_tokens=3, task="density"
    )  # the context stage 2 started from
    assert not torch.equal(model.prompt_learner.ctx, before.prompt_learner.ctx)
    vision_moved = any(
        not torch.equal(a, b)
        for a, b in zip(model.vision_model.state_dict().values(), before.vision_model.state_dict().values())
    )
    assert vision_moved is not freeze_vision


@pytest.mark.parametrize("loss,freeze_vision", [("bce", False), ("clip", False), ("bce", True)])
def test_stage2_on_multi_label_reports(tmp_path, demo_tree, embed_stage1, loss, freeze_vision):
    summary = _stage2(embed_stage1, tmp_path, "synthetic", demo_tree, loss=loss, freeze_vision=freeze_vision)
    assert summary["class_names"][0] == "Atelectasis"
    assert all(torch.isfinite(torch.tensor(value)) for _, value in summary["loss_curve"])


def test_density_then_birads_gives_one_model_with_both_prompt_sets(tmp_path, embed_tree, embed_stage1):
    _stage2(embed_stage1, tmp_path / "density", "embed", embed_tree, dataset_kwargs={"task": "density"})
    _stage2(
        tmp_path / "density" / "model", tmp_path / "birads", "embed", embed_tree, dataset_kwargs={"task": "birads"}
    )
    model = CLEFTModel.from_pretrained(tmp_path / "birads" / "model").eval()
    assert model.prompt_set_names() == ["birads", "density"]
    density = CLEFTModel.from_pretrained(tmp_path / "density" / "model")
    assert torch.equal(model.prompt_sets["density"].ctx, density.prompt_learner.ctx)
    pixels = torch.zeros(2, 3, 32, 32)
    assert model.zero_shot_classify(pixels, use_learned_prompts=True, task="density").shape == (2, 4)
    assert model.zero_shot_classify(pixels, use_learned_prompts=True, task="birads").shape == (2, 7)


def test_mammography_model_card_never_says_chest_x_ray(embed_stage1):
    from cleft_hf.hub.model_card import render_model_card

    card = render_model_card(CLEFTModel.from_pretrained(embed_stage1))
    assert "mammography" in card.data.tags and "chest-x-ray" not in card.data.tags
    assert "chest x ray" not in card.text.lower() and "chest x-ray" not in card.text.lower()
    assert 'task="density"' in card.text and "mammography images" in card.text
