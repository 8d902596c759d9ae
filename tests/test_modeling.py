"""CLEFTModel: shapes, trainable set, PEFT defaults, padding, prompts, zero-shot, checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cleft_hf import CLEFTModel


def _trainable_expected(name: str) -> bool:
    return (
        name.startswith(("vision_model.", "visual_projection.", "text_projection.", "logit_scale")) or ".lora_" in name
    )


def test_gradients_reach_exactly_the_trainable_set(model, batch):
    model(**batch, return_loss=True).loss.backward()
    for name, parameter in model.named_parameters():
        expected = _trainable_expected(name)
        assert parameter.requires_grad == expected, name
        assert (parameter.grad is not None) == expected, name
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]  # lora_A gets 0 while B is 0
    assert lora and all(p.grad.abs().sum() > 0 for p in lora)


def test_stage2_trains_only_context_and_vision(model, batch, processor):
    model.set_prompt_classes(["edema", "cardiomegaly", "atelectasis"], processor)
    model.configure_for_prompt_tuning(freeze_vision=False)
    images = model.get_image_features(batch["pixel_values"])
    prompts = model.get_prompt_features()
    (images @ prompts.t()).sum().backward()
    for name, parameter in model.named_parameters():
        expected = name.startswith(("vision_model.", "visual_projection.", "prompt_sets._unnamed.ctx"))
        assert (parameter.grad is not None) == expected, name
        trainable = expected or name in ("logit_scale", "logit_bias")
        assert parameter.requires_grad == trainable, name
    model.configure_for_prompt_tuning(freeze_vision=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_sets._unnamed.ctx", "logit_bias"}


def test_lora_default_targets_per_family(model, family):
    expected = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}[family]
    assert sorted(model.config.peft_config["target_modules"]) == expected
    assert model.config.peft_config["r"] == 8 and model.config.peft_config["lora_alpha"] == 32
    wrapped = {n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert wrapped == set(expected)


def test_explicit_target_modules_override(make_model, family):
    target = {"gpt2": ["c_proj"], "llama": ["o_proj"]}[family]
    model = make_model(peft_config={"peft_type": "LORA", "r": 4, "target_modules": target})
    wrapped = {n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert wrapped == set(target)


@pytest.mark.parametrize(
    "peft_config",
    [
        {"peft_type": "IA3"},
        {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3},
        {"peft_type": "ADALORA", "total_step": 10, "init_r": 4, "target_r": 2},
    ],
)
def test_other_peft_methods_train(make_model, batch, peft_config):
    model = make_model(peft_config=peft_config)
    out = model(**batch, return_loss=True)
    out.loss.backward()
    adapter = [p for n, p in model.text_model.named_parameters() if p.requires_grad]
    assert adapter and all(p.grad is not None for p in adapter)
    assert all(p.grad is None for n, p in model.text_model.named_parameters() if not p.requires_grad)


def test_left_and_right_padding_give_same_text_features(model, processor):
    texts = ["no edema", "this is a chest x ray of a patient with cardiomegaly in the right lower lobe."]
    model.eval()
    right = processor(text=texts)
    features_right = model.get_text_features(right["input_ids"], right["attention_mask"])
    processor.tokenizer.padding_side = "left"
    left = processor.tokenizer(texts, padding=True, return_tensors="pt")
    assert left["attention_mask"][0, 0] == 0  # really left padded
    features_left = model.get_text_features(left["input_ids"], left["attention_mask"])
    torch.testing.assert_close(features_left, features_right, atol=1e-5, rtol=1e-5)
    single = model.get_text_features(**{k: v[:1, : int(right["attention_mask"][0].sum())] for k, v in right.items()})
    torch.testing.assert_close(single[0], features_right[0], atol=1e-5, rtol=1e-5)


def test_last_token_when_text_fills_max_length(model, processor):
    model.eval()
    long_text = " ".join(["cardiomegaly with pleural effusion"] * 40)
    encoded = processor(text=[long_text, "edema"], max_length=16)
    assert encoded["attention_mask"][0].sum() == 16
    assert encoded["input_ids"][0, -1] == processor.tokenizer.eos_token_id
    features = model.get_text_features(encoded["input_ids"], encoded["attention_mask"])
    alone = model.get_text_features(encoded["input_ids"][:1], encoded["attention_mask"][:1])
    torch.testing.assert_close(features[:1], alone, atol=1e-5, rtol=1e-5)


def test_prompt_context_is_inserted_before_class_text(model, processor):
    model.eval()
    model.set_prompt_classes(["edema", "pleural effusion"], processor)
    model.initialize_prompt_context(processor, init_text="this is a chest x ray of a patient with")
    ctx = model.prompt_learner.ctx
    assert ctx.shape == (4, model.text_embed_dim)
    ids, mask = model.stored_class_inputs()
    features = model.get_prompt_features()
    # Same thing by hand: embeddings of [bos?] + ctx + class tokens through the text tower.
    embed = model.text_model.get_input_embeddings()
    bos = processor.tokenizer.bos_token_id
    insert_at = int(bool((ids[:, 0] == bos).all()))
    for row in range(2):
        n = int(mask[row].sum())
        tokens = embed(ids[row : row + 1, :n])
        manual = torch.cat([tokens[:, :insert_at], ctx.unsqueeze(0), tokens[:, insert_at:]], dim=1)
        hidden = model.text_model(inputs_embeds=manual, return_dict=True).last_hidden_state[:, -1]
        torch.testing.assert_close(model.text_projection(hidden)[0], features[row], atol=1e-5, rtol=1e-5)


def test_class_specific_context_needs_one_context_per_name(make_model, processor):
    model = make_model(prompt_class_specific=True)
    model.set_prompt_classes(["edema", "atelectasis", "cardiomegaly"], processor)
    assert model.prompt_learner.ctx.shape[0] == 3
    with pytest.raises(ValueError, match="3 classes"):
        model.set_prompt_classes(["edema"], processor)


def test_zero_shot_probabilities_and_cache(model, batch, processor, monkeypatch):
    model.eval()
    names = ["edema", "cardiomegaly", "atelectasis"]
    probs = model.zero_shot_classify(batch["pixel_values"], names, processor)
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    calls = []
    original = CLEFTModel.get_text_features
    monkeypatch.setattr(
        CLEFTModel, "get_text_features", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    again = model.zero_shot_classify(batch["pixel_values"], names, processor)
    assert calls == [] and torch.equal(again, probs)  # class embeddings reused
    with torch.no_grad():
        model.text_projection.weight.mul_(1.5)  # any weight update invalidates the cache
    model.zero_shot_classify(batch["pixel_values"], names, processor)
    assert calls == [1]
    # Same as the scores of forward on the hand prompts.
    prompts = processor(text=[model.config.prompt_template.format(n) for n in names])
    logits = model(pixel_values=batch["pixel_values"], **prompts).logits_per_image
    torch.testing.assert_close(model.zero_shot_classify(batch["pixel_values"], names, processor), logits.softmax(-1))


def test_zero_shot_with_learned_prompts(model, batch, processor):
    model.eval()
    model.set_prompt_classes(["edema", "cardiomegaly"], processor)
    probs = model.zero_shot_classify(batch["pixel_values"], use_learned_prompts=True)
    with torch.no_grad():
        images = F.normalize(model.get_image_features(batch["pixel_values"]), dim=-1)
        prompts = F.normalize(model.get_prompt_features(), dim=-1)
    torch.testing.assert_close(probs, (model.logit_scale.exp() * images @ prompts.t()).softmax(-1))
    subset = model.zero_shot_classify(batch["pixel_values"], ["cardiomegaly"], use_learned_prompts=True)
    assert subset.shape == (3, 1)
    with pytest.raises(ValueError, match=r"\['atelectasis'\].*learned classes are \['edema', 'cardiomegaly'\]"):
        model.zero_shot_classify(batch["pixel_values"], ["edema", "atelectasis"], processor, use_learned_prompts=True)


def test_gradient_checkpointing_same_gradients(make_model, batch):
    grads = []
    for checkpointing in (False, True):
        model = make_model(seed=3)
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_activation_checkpointing
        model.train()
        torch.manual_seed(0)
        model(**batch, return_loss=True).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_setup_prompt_learning_rebuilds_context(model, processor, batch):
    model.setup_prompt_learning(["edema", "atelectasis"], processor, num_context_tokens=6, class_specific=True)
    assert model.prompt_learner.ctx.shape == (2, 6, model.text_embed_dim)
    assert model.config.prompt_num_context_tokens == 6 and model.config.class_names == ["edema", "atelectasis"]
    model.configure_for_prompt_tuning(freeze_vision=True)
    model.eval()  # no LoRA dropout: both calls see the same text tower
    out = model(pixel_values=batch["pixel_values"], use_learned_prompts=True)
    assert out.logits_per_image.shape == (3, 2)
    cached = model(image_embeds=out.image_embeds, use_learned_prompts=True)
    torch.testing.assert_close(cached.logits_per_image, out.logits_per_image)
    cached.logits_per_image.sum().backward()
    assert model.prompt_learner.ctx.grad is not None and model.visual_projection.weight.grad is None
