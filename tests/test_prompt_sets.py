"""Several named learned prompt sets in one model, hand prompts per task, and the zero-shot pipeline registered
with the model (it travels in config.json with the remote code)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import pipeline

from cleft_hf import CLEFTModel

DENSITY = ["almost entirely fat", "scattered fibroglandular densities", "heterogeneously dense", "extremely dense"]
BIRADS = ["negative", "benign finding", "suspicious abnormality"]


def _images():
    from PIL import Image

    return [
        Image.fromarray((torch.rand(40, 48, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy())
        for i in range(2)
    ]


def _two_sets(model, processor):
    model.setup_prompt_learning(DENSITY, processor, num_context_tokens=3, task="density", init_text="")
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(1))
    model.setup_prompt_learning(BIRADS, processor, num_context_tokens=2, task="birads", init_text="")
    model.config.hand_prompts = {
        "density": {name: f"breast tissue density {k + 1}: {name}." for k, name in enumerate(DENSITY)}
    }
    return model.eval()


def test_one_model_carries_named_prompt_sets(model, processor, batch, tmp_path):
    model = _two_sets(model, processor)
    density_ctx = model.prompt_sets["density"].ctx.clone()
    assert model.prompt_set_names() == ["birads", "density"] and model.config.class_names == BIRADS
    pixels = batch["pixel_values"]
    density = model.zero_shot_classify(pixels, use_learned_prompts=True, task="density")
    birads = model.zero_shot_classify(pixels, use_learned_prompts=True, task="birads")
    assert density.shape == (3, 4) and birads.shape == (3, 3)
    torch.testing.assert_close(birads, model.zero_shot_classify(pixels, use_learned_prompts=True))  # the active set
    subset = model.zero_shot_classify(
        pixels, DENSITY[2:], use_learned_prompts=True, task="density", return_logits=True
    )
    torch.testing.assert_close(
        subset, model.zero_shot_classify(pixels, use_learned_prompts=True, task="density", return_logits=True)[:, 2:]
    )
    model.save_pretrained(tmp_path)
    loaded = CLEFTModel.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.prompt_sets["density"].ctx, density_ctx) and loaded.config.prompt_task == "birads"
    torch.testing.assert_close(loaded.zero_shot_classify(pixels, use_learned_prompts=True, task="density"), density)
    # retraining a stored set makes it the active one again, the other set is kept
    loaded.setup_prompt_learning(DENSITY, processor, num_context_tokens=3, task="density")
    assert loaded.prompt_set_names() == ["density", "birads"] and sorted(loaded.prompt_sets) == ["birads", "density"]


def test_unknown_sets_and_class_names_are_clear_errors(model, processor, batch):
    model = _two_sets(model, processor)
    pixels = batch["pixel_values"]
    with pytest.raises(ValueError, match="no learned prompt set 'mass'.*'birads', 'density'"):
        model.zero_shot_classify(pixels, use_learned_prompts=True, task="mass")
    with pytest.raises(ValueError, match=r"\['Negative'\].*learned classes are \['negative'"):
        model.zero_shot_classify(pixels, ["Negative", "benign finding"], use_learned_prompts=True, task="birads")
    with pytest.raises(ValueError, match=r"\['fatty'\]"):
        model.zero_shot_classify(pixels, ["fatty"], use_learned_prompts=True, task="density")


def test_hand_prompts_of_a_task_come_from_the_config(model, processor, batch):
    model = _two_sets(model, processor)
    pixels = batch["pixel_values"]
    stored = model.zero_shot_classify(pixels, processor=processor, task="density")
    prompts = list(model.config.hand_prompts["density"].values())
    explicit = model.zero_shot_classify(pixels, prompts, processor, prompt_template="{}")
    torch.testing.assert_close(stored, explicit)


def test_pipeline_with_learned_sets_and_as_transformers(model, processor, batch):
    model = _two_sets(model, processor)
    images = _images()
    pixels = processor(images=images)["pixel_values"]
    classifier = model.zero_shot_pipeline(processor)
    learned = classifier(images, use_learned_prompts=True, task="density")
    expected = model.zero_shot_classify(pixels, use_learned_prompts=True, task="density")
    for row, result in enumerate(learned):
        scores = {item["label"]: item["score"] for item in result}
        torch.testing.assert_close(torch.tensor([scores[n] for n in DENSITY]), expected[row], atol=1e-5, rtol=1e-5)
    labels = ["edema", "cardiomegaly"]
    ours = classifier(images, candidate_labels=labels, hypothesis_template=model.config.prompt_template)
    theirs = pipeline(
        "zero-shot-image-classification",
        model=model,
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
    )(images, candidate_labels=labels, hypothesis_template=model.config.prompt_template)
    for mine, reference in zip(ours, theirs):  # transformers converts to RGB first: float rounding only
        assert [x["label"] for x in mine] == [x["label"] for x in reference]
        assert [x["score"] for x in mine] == pytest.approx([x["score"] for x in reference], abs=1e-6)
    with pytest.raises(ValueError, match="no learned prompt"):
        classifier(images, candidate_labels=["Extremely dense"], use_learned_prompts=True, task="density")
    with pytest.raises(ValueError, match="use_learned_prompts=True"):
        classifier(images, candidate_labels=labels, task="density")


ISOLATED = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "cleft_hf" or name.startswith("cleft_hf."):
                raise ImportError("cleft_hf is blocked in this interpreter")
    sys.meta_path.insert(0, Block())
    import torch
    from transformers import pipeline
    classifier = pipeline("zero-shot-image-classification", model=sys.argv[1], trust_remote_code=True)
    from PIL import Image
    images = [Image.fromarray((torch.rand(40, 48, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy())
              for i in range(2)]
    learned = classifier(images, use_learned_prompts=True, task="density")
    hand = classifier(images, candidate_labels=["edema", "cardiomegaly"], hypothesis_template="a {} image")
    torch.save({"learned": learned, "hand": hand, "module": type(classifier).__module__}, sys.argv[2])
    """
)


def test_pipeline_travels_with_the_saved_model(model, processor, tmp_path):
    model = _two_sets(model, processor)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    impl = config["custom_pipelines"]["zero-shot-image-classification"]["impl"]
    assert impl == "pipeline_cleft.CLEFTZeroShotImageClassificationPipeline"
    assert (tmp_path / "model" / "pipeline_cleft.py").is_file()
    (tmp_path / "isolated.py").write_text(ISOLATED)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "isolated.py"), str(tmp_path / "model"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert got["module"].startswith("transformers_modules")
    classifier = model.zero_shot_pipeline(processor)
    images = _images()
    for ours, theirs in zip(classifier(images, use_learned_prompts=True, task="density"), got["learned"]):
        assert [x["label"] for x in ours] == [x["label"] for x in theirs]
        assert [x["score"] for x in ours] == pytest.approx([x["score"] for x in theirs], abs=1e-6)
    hand = classifier(images, candidate_labels=["edema", "cardiomegaly"], hypothesis_template="a {} image")
    assert [x["score"] for x in hand[0]] == pytest.approx([x["score"] for x in got["hand"][0]], abs=1e-6)
