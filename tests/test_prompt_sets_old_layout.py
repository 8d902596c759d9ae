"""Folders written before the prompt sets were one `ModuleDict`: the active set in `prompt_learner` (state-dict key
`prompt_learner.ctx`, config `class_names` / `prompt_class_token_ids` / `prompt_task` + its sizes at the top
level), the others in `prompt_sets`. They load through the key mapping with the same scores, and save anew."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file
import torch

from cleft_hf import CLEFTModel

DENSITY = ["almost entirely fat", "scattered fibroglandular densities", "heterogeneously dense", "extremely dense"]
BIRADS = ["negative", "benign finding", "suspicious abnormality"]


def _rewrite(folder, edit_config, edit_state) -> None:
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    config = json.loads(config_file.read_text())
    edit_config(config)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file(edit_state(load_file(weights)), weights, metadata={"format": "pt"})


def _to_old_layout(folder, active: str | None) -> None:
    """What the older code wrote: the active set at the top level and under `prompt_learner`."""

    def config(saved):
        sets = saved.pop("prompt_sets")
        key = saved.pop("active_prompt_set")
        entry = sets.pop(key)
        saved.update(
            class_names=entry["class_names"],
            prompt_class_token_ids=entry["prompt_class_token_ids"],
            prompt_num_context_tokens=entry["prompt_num_context_tokens"],
            prompt_class_specific=entry["prompt_class_specific"],
            prompt_task=active,
            prompt_sets=sets or None,
        )

    def state(weights):
        key = next(k for k in weights if k.startswith("prompt_sets.") and k.split(".")[1] in (active, "_unnamed"))
        weights["prompt_learner.ctx"] = weights.pop(key)
        return weights

    _rewrite(folder, config, state)


def _scores(model, pixels, tasks):
    return {task: model.zero_shot_classify(pixels, use_learned_prompts=True, task=task) for task in tasks}


def test_old_folder_with_two_sets_loads_with_the_same_scores(model, processor, batch, tmp_path):
    model.setup_prompt_learning(DENSITY, processor, num_context_tokens=3, task="density", init_text="")
    model.setup_prompt_learning(
        BIRADS, processor, num_context_tokens=2, class_specific=True, task="birads", init_text=""
    )
    model.eval()
    pixels = batch["pixel_values"]
    expected = _scores(model, pixels, [None, "density", "birads"])
    model.save_pretrained(tmp_path / "old")
    _to_old_layout(tmp_path / "old", active="birads")
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    assert saved["prompt_task"] == "birads" and list(saved["prompt_sets"]) == ["density"]
    assert "prompt_learner.ctx" in load_file(tmp_path / "old" / "model.safetensors")

    loaded = CLEFTModel.from_pretrained(tmp_path / "old").eval()
    assert loaded.prompt_set_names() == ["birads", "density"] and loaded.config.prompt_task == "birads"
    assert loaded.prompt_set("birads")[0].ctx.shape == (3, 2, model.text_embed_dim)
    got = _scores(loaded, pixels, [None, "density", "birads"])
    for task, scores in expected.items():
        torch.testing.assert_close(got[task], scores, rtol=0, atol=0)
    loaded.save_pretrained(tmp_path / "new")  # written in the current layout
    keys = set(load_file(tmp_path / "new" / "model.safetensors"))
    assert {"prompt_sets.birads.ctx", "prompt_sets.density.ctx"} <= keys and "prompt_learner.ctx" not in keys
    again = CLEFTModel.from_pretrained(tmp_path / "new").eval()
    torch.testing.assert_close(_scores(again, pixels, ["birads"])["birads"], expected["birads"], rtol=0, atol=0)


def test_old_folder_with_an_unnamed_set_and_an_old_stage_1_folder(model, processor, batch, tmp_path):
    model.save_pretrained(tmp_path / "stage1")  # older stage-1 folders carry an unused random context
    _rewrite(
        tmp_path / "stage1",
        lambda config: config.update(class_names=None, prompt_task=None),
        lambda weights: {**weights, "prompt_learner.ctx": torch.randn(4, model.text_embed_dim)},
    )
    stage1 = CLEFTModel.from_pretrained(tmp_path / "stage1")
    assert stage1.prompt_set_names() == [] and not list(stage1.prompt_sets)
    with pytest.raises(ValueError, match="no learned prompts"):
        stage1.prompt_set()

    model.set_prompt_classes(["edema", "cardiomegaly"], processor)  # a set without a name
    model.eval()
    expected = model.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True)
    model.save_pretrained(tmp_path / "unnamed")
    _to_old_layout(tmp_path / "unnamed", active=None)
    loaded = CLEFTModel.from_pretrained(tmp_path / "unnamed").eval()
    assert loaded.prompt_set_names() == [None] and loaded.config.class_names == ["edema", "cardiomegaly"]
    got = loaded.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_class_names_are_set_up_on_the_model_not_given_to_the_config(make_model):
    with pytest.raises(ValueError, match="setup_prompt_learning"):
        make_model(class_names=["edema", "atelectasis"])
