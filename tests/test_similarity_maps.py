"""Similarity maps: per-token terms that add up exactly to the zero-shot logits (ViT and CNN towers)."""

from __future__ import annotations

from conftest import FINDINGS
import pytest
import torch
from torch import nn

TOWERS = {"vit": {}, "cnn": {"vision_model_name": "resnet10t", "vision_model_kwargs": {}}}


def _pixels(size: int = 32, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("tower", sorted(TOWERS))
@pytest.mark.parametrize("learned", [False, True], ids=["hand", "learned"])
def test_maps_add_up_to_the_zero_shot_logits(make_model, processor, tower, learned):
    model = make_model(**TOWERS[tower]).eval()
    names = FINDINGS[:3]
    if learned:
        model.setup_prompt_learning(names, processor, task="findings")
    with torch.no_grad():
        model.logit_bias.fill_(-0.7)  # a trained sigmoid bias is shared by the tokens too
    kwargs = {"use_learned_prompts": True, "task": "findings"} if learned else {"class_names": names}
    pixels = _pixels()
    maps = model.similarity_maps(pixels, processor=processor, **kwargs)
    logits = model.zero_shot_classify(pixels, processor=processor, return_logits=True, **kwargs)
    torch.testing.assert_close(maps.total(), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.logits, logits, atol=1e-5, rtol=0)
    assert maps.class_names == names
    if tower == "vit":  # 32 px / patch 8: a 4 x 4 grid, one CLS and two registers reported apart
        assert maps.patch_maps.shape == (2, 3, 4, 4)
        assert maps.cls.shape == (2, 3) and maps.registers.shape == (2, 3, 2)
    else:  # resnet10t downsamples 32 px to a 1 x 1 map: a larger input gives a real grid
        assert maps.cls is None and maps.registers is None
        big = _pixels(size=96)
        big_maps = model.similarity_maps(big, processor=processor, **kwargs)
        assert big_maps.patch_maps.shape == (2, 3, 3, 3)
        big_logits = model.zero_shot_classify(big, processor=processor, return_logits=True, **kwargs)
        torch.testing.assert_close(big_maps.total(), big_logits, atol=1e-5, rtol=0)


def test_a_projection_bias_is_shared_by_the_tokens(make_model, processor):
    model = make_model().eval()
    biased = nn.Linear(model.vision_embed_dim, model.config.projection_dim, bias=True)
    with torch.no_grad():
        biased.weight.copy_(model.visual_projection.weight)
        biased.bias.normal_()
    model.visual_projection = biased
    pixels = _pixels()
    maps = model.similarity_maps(pixels, FINDINGS, processor)
    logits = model.zero_shot_classify(pixels, FINDINGS, processor, return_logits=True)
    torch.testing.assert_close(maps.total(), logits, atol=1e-5, rtol=0)


def test_cls_pooling_and_mlp_heads_are_refused(make_model, processor):
    with pytest.raises(ValueError, match="image_pooling='mean'"):
        make_model(image_pooling="cls").similarity_maps(_pixels(), FINDINGS, processor)
    with pytest.raises(ValueError, match="linear image projection"):  # the reference's MLP head
        make_model(projection_head="mlp").eval().similarity_maps(_pixels(), FINDINGS, processor)


def test_the_demo_figure_of_a_saved_model(tmp_path, tokenizer_dirs, demo_tree):
    from tiny_models import tiny_cleft_config
    from transformers import AutoTokenizer

    from cleft_hf import CLEFTImageProcessor, CLEFTModel, CLEFTProcessor
    from cleft_hf.demo.similarity_figures import write_similarity_figure

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dirs["gpt2"])
    processor = CLEFTProcessor(CLEFTImageProcessor(size=32, crop_size=32), tokenizer, max_length=48)
    model = CLEFTModel(tiny_cleft_config("gpt2", tokenizer))
    model.setup_prompt_learning(FINDINGS, processor)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    path = write_similarity_figure(tmp_path / "model", "synthetic", demo_tree, tmp_path / "plots" / "maps.png")
    assert path.stat().st_size > 5000
