"""Prompt ensembles (averaged template embeddings) and positive / negative prompt pairs."""

from __future__ import annotations

from conftest import FINDINGS
import pytest
import torch
import torch.nn.functional as F

TEMPLATES = ["a chest x ray showing {}.", "findings consistent with {}."]


def _pixels() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def test_an_ensemble_averages_the_normalised_template_embeddings(model, processor):
    model.eval()
    single = [model.encode_class_prompts(FINDINGS, processor, prompt_template=t) for t in TEMPLATES]
    expected = F.normalize(single[0] + single[1], dim=-1)
    ensemble = model.encode_class_prompts(FINDINGS, processor, prompt_templates=TEMPLATES)
    torch.testing.assert_close(ensemble, expected)
    torch.testing.assert_close(
        model.encode_class_prompts(FINDINGS, processor, prompt_templates=TEMPLATES[:1]), single[0]
    )
    pixels = _pixels()
    image = F.normalize(model.get_image_features(pixels), dim=-1)
    probabilities = model.zero_shot_classify(pixels, FINDINGS, processor, prompt_templates=TEMPLATES)
    torch.testing.assert_close(probabilities, model.similarity_logits(image, expected).softmax(-1))
    one = model.zero_shot_classify(pixels, FINDINGS, processor, prompt_templates=TEMPLATES[:1])  # not the cached one
    torch.testing.assert_close(one, model.similarity_logits(image, single[0]).softmax(-1))


def test_bad_templates_are_refused(model, processor):
    with pytest.raises(ValueError, match="one '\\{\\}' each"):
        model.encode_class_prompts(FINDINGS, processor, prompt_templates=["no placeholder"])
    with pytest.raises(ValueError, match="hand prompts"):
        model.encode_class_prompts(FINDINGS, processor, prompt_templates=TEMPLATES, use_learned_prompts=True)


def test_positive_negative_pairs_give_independent_probabilities(model, processor):
    model.eval()
    pixels = _pixels()
    probabilities = model.zero_shot_multilabel(pixels, FINDINGS, processor, negative_template="no {}.")
    image = F.normalize(model.get_image_features(pixels), dim=-1)
    positive = model.similarity_logits(image, model.encode_class_prompts(FINDINGS, processor, prompt_template="{}"))
    negative = model.similarity_logits(
        image, model.encode_class_prompts(FINDINGS, processor, prompt_template="no {}.")
    )
    assert probabilities.shape == (3, len(FINDINGS))
    torch.testing.assert_close(probabilities, torch.sigmoid(positive - negative))
