"""CLEFTModel's transformers-style API: the one loss and clamp, logit_bias, tower outputs, kwargs, pooling values."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file, save_file
import torch
import torch.nn.functional as F

from cleft_hf import CLEFTModel
from cleft_hf.modeling.loss_cleft import MAX_LOGIT_SCALE, clip_loss


def test_return_loss_is_clip_loss_on_clamped_logits(model, batch):
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # exp(6) > 100: the clamp applies
    model.eval()
    out = model(**batch, return_loss=True)
    cosine = out.image_embeds @ out.text_embeds.t()
    torch.testing.assert_close(out.logits_per_image, MAX_LOGIT_SCALE * cosine)
    targets = torch.arange(cosine.shape[0])
    by_hand = (F.cross_entropy(out.logits_per_image, targets) + F.cross_entropy(out.logits_per_text, targets)) / 2
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(out.loss, clip_loss(out.image_embeds, out.text_embeds, model.logit_scale))


def test_forward_rejects_unknown_keyword(model, batch):
    with pytest.raises(TypeError, match="output_hidden_state\\b"):
        model(**batch, output_hidden_state=True)


def test_forward_returns_both_towers_outputs(model, batch):
    model.eval()
    out = model(**batch, output_hidden_states=True)
    text, vision = out.text_model_output, out.vision_model_output
    layers = model.text_model.get_base_model().config.num_hidden_layers
    assert len(text.hidden_states) == layers + 1
    last = batch["attention_mask"].sum(dim=1) - 1
    torch.testing.assert_close(text.pooler_output, text.last_hidden_state[torch.arange(3), last])
    torch.testing.assert_close(out.text_embeds, F.normalize(model.text_projection(text.pooler_output), dim=-1))
    assert len(vision.hidden_states) == len(model.vision_model.blocks)
    torch.testing.assert_close(vision.pooler_output, vision.last_hidden_state.mean(dim=1))  # all tokens, pre-norm
    torch.testing.assert_close(out.image_embeds, F.normalize(model.visual_projection(vision.pooler_output), dim=-1))
    plain = model(**batch)
    assert plain.text_model_output.hidden_states is None and plain.vision_model_output.hidden_states is None
    torch.testing.assert_close(plain.logits_per_image, out.logits_per_image)
    as_tuple = model(**batch, return_dict=False)
    assert len(as_tuple) == 6 and isinstance(as_tuple[-1], tuple)  # tower outputs as tuples, as CLIPOutput


def test_cls_pooling_takes_the_normalised_class_token(make_model, batch):
    model = make_model(image_pooling="cls").eval()
    pixels = batch["pixel_values"]
    tokens = model.vision_model.forward_features(pixels)
    pooled = model.vision_forward(pixels).pooler_output
    torch.testing.assert_close(pooled, tokens[:, 0])
    assert torch.allclose(tokens[:, 0].mean(dim=-1), torch.zeros(3), atol=1e-5)  # LayerNorm applied
    torch.testing.assert_close(model.get_image_features(pixels), model.visual_projection(tokens[:, 0]))


def test_convolutional_vision_tower_pools_the_feature_map(make_model, batch):
    model = make_model(vision_model_name="resnet10t", vision_model_kwargs={}).eval()
    pixels = batch["pixel_values"]
    output = model.vision_forward(pixels, output_hidden_states=True)
    assert output.last_hidden_state.ndim == 4 and len(output.hidden_states) >= 4
    torch.testing.assert_close(output.pooler_output, output.last_hidden_state.mean(dim=(2, 3)))
    out = model(**batch, return_loss=True)
    out.loss.backward()
    assert model.vision_model.conv1[0].weight.grad is not None
    with pytest.raises(ValueError, match="needs a transformer vision tower"):
        make_model(vision_model_name="resnet10t", vision_model_kwargs={}, image_pooling="cls").get_image_features(
            pixels
        )


def test_logit_bias_is_a_model_parameter_kept_when_prompts_are_rebuilt(model, batch, processor):
    with torch.no_grad():
        model.logit_bias.fill_(-3.0)
    model.setup_prompt_learning(["edema", "atelectasis"], processor, num_context_tokens=6, class_specific=True)
    assert model.prompt_learner.ctx.shape[1] == 6 and model.logit_bias.item() == -3.0
    model.eval()
    out = model(**batch)
    cosine = out.image_embeds @ out.text_embeds.t()
    torch.testing.assert_close(out.logits_per_image, model.logit_scale.exp() * cosine - 3.0)
    probs = model.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True)
    logits = model.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True, return_logits=True)
    torch.testing.assert_close(probs, logits.softmax(-1))


def test_checkpoint_with_the_bias_in_the_prompt_learner_still_loads(model, batch, tmp_path):
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    state["prompt_learner.logit_bias"] = torch.tensor([-2.5])  # the layout before logit_bias moved to the model
    del state["logit_bias"]
    save_file(state, weights, metadata={"format": "pt"})
    loaded = CLEFTModel.from_pretrained(tmp_path)
    assert loaded.logit_bias.item() == -2.5 and loaded.logit_scale.item() == 2.0
    torch.testing.assert_close(loaded.visual_projection.weight, model.visual_projection.weight)


def test_class_specific_context_row_uses_its_own_context(make_model, processor):
    names = ["edema", "atelectasis", "cardiomegaly"]
    model = make_model(prompt_class_specific=True).eval()
    model.set_prompt_classes(names, processor)
    with torch.no_grad():
        for index in range(3):
            model.prompt_learner.ctx[index].normal_(generator=torch.Generator().manual_seed(index))
    ids, mask = model.stored_class_inputs()
    features = model.get_prompt_features()
    swapped = model.get_prompt_features(ids[[0]], mask[[0]], class_indices=torch.tensor([2]))
    ctx = model.prompt_learner.ctx
    embed = model.text_model.get_input_embeddings()
    insert_at = int(
        processor.tokenizer.bos_token_id is not None and bool((ids[:, 0] == processor.tokenizer.bos_token_id).all())
    )
    for row, context in ((0, ctx[0]), (1, ctx[1]), (2, ctx[2])):
        tokens = embed(ids[row : row + 1, : int(mask[row].sum())])
        manual = torch.cat([tokens[:, :insert_at], context.unsqueeze(0), tokens[:, insert_at:]], dim=1)
        hidden = model.text_model(inputs_embeds=manual, return_dict=True).last_hidden_state[:, -1]
        torch.testing.assert_close(features[row], model.text_projection(hidden)[0], atol=1e-5, rtol=1e-5)
    tokens = embed(ids[:1, : int(mask[0].sum())])
    manual = torch.cat([tokens[:, :insert_at], ctx[2].unsqueeze(0), tokens[:, insert_at:]], dim=1)
    hidden = model.text_model(inputs_embeds=manual, return_dict=True).last_hidden_state[:, -1]
    torch.testing.assert_close(swapped[0], model.text_projection(hidden)[0], atol=1e-5, rtol=1e-5)
