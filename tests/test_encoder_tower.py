"""Encoder text towers (the BERT CLIP baseline) in the same CLEFTModel: config, forward, training whole or with
LoRA, saving and loading (remote code too), stage-2 context after [CLS], zero-shot pipeline."""

from __future__ import annotations

from conftest import CORPUS, run_isolated
import pytest
from test_saving import ISOLATED
from tiny_models import TINY_VISION_MODEL, tiny_vision_kwargs
import torch
from transformers import AutoTokenizer, BertForMaskedLM

from cleft_hf import CLEFTConfig, CLEFTImageProcessor, CLEFTModel, CLEFTProcessor
from cleft_hf.demo.language_model.masked_lm import (
    tiny_bert_config,
    train_wordpiece_tokenizer,
)

WHOLE = {"peft_type": "NONE"}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A 3-layer BERT (masked-LM head, as Bio_ClinicalBERT's files) and its WordPiece tokenizer, saved."""
    path = tmp_path_factory.mktemp("bert")
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=200)
    torch.manual_seed(3)
    BertForMaskedLM(tiny_bert_config(len(tokenizer), num_layers=3, hidden_size=32, num_heads=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def bert_processor(bert_dir):
    return CLEFTProcessor(
        CLEFTImageProcessor(size=32, crop_size=32), AutoTokenizer.from_pretrained(bert_dir), max_length=48
    )


def _bert_clip(bert_dir, **config):
    torch.manual_seed(0)
    fields = {
        "vision_model_kwargs": tiny_vision_kwargs(),
        "image_size": 32,
        "projection_dim": 16,
        "prompt_num_context_tokens": 4,
        "text_num_layers": 2,
        "peft_config": WHOLE,
        **config,
    }
    return CLEFTModel.from_vision_text_pretrained(TINY_VISION_MODEL, str(bert_dir), vision_pretrained=False, **fields)


def _batch(processor):
    images = [torch.rand(40, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    return processor(text=[CORPUS[0], CORPUS[5] + " and more words", CORPUS[9]], images=images)


def test_config_cuts_layers_and_refuses_bad_values(bert_dir):
    text_config = tiny_bert_config(200, num_layers=3, hidden_size=32, num_heads=2).to_dict()
    config = CLEFTConfig(text_config=text_config, text_num_layers=2, peft_config=WHOLE)
    assert config.text_is_encoder and config.text_tower_trained and config.text_config.num_hidden_layers == 2
    assert CLEFTConfig.from_dict(config.to_dict()).text_config.num_hidden_layers == 2  # a saved config reloads
    with pytest.raises(ValueError, match=r"text_num_layers=4 is larger than the text model's 3 layers"):
        CLEFTConfig(text_config=text_config, text_num_layers=4, peft_config=WHOLE)
    with pytest.raises(ValueError, match="takes no other field"):
        CLEFTConfig(text_config=text_config, peft_config={"peft_type": "NONE", "r": 8})
    lora = CLEFTConfig(text_config=text_config)  # key left out: LoRA on peft's default BERT targets
    assert lora.peft_config["target_modules"] == ["query", "value"]
    distilbert = {
        "model_type": "distilbert",
        "vocab_size": 200,
        "dim": 32,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dim": 64,
    }
    with pytest.raises(ValueError, match="set peft_config\\['target_modules'\\] explicitly .*peft_type NONE"):
        CLEFTConfig(text_config=distilbert)
    assert CLEFTConfig(text_config=distilbert, peft_config=WHOLE, text_num_layers=1).text_config.n_layers == 1
    with pytest.raises(ValueError, match="neither a causal LM nor an encoder"):
        CLEFTConfig(text_config={"model_type": "t5"})


def test_whole_tower_trains_and_pools_cls(bert_dir, bert_processor):
    model = _bert_clip(bert_dir)
    assert type(model.text_model).__name__ == "BertModel" and model.text_model.pooler is None
    assert len(model.text_model.encoder.layer) == 2
    assert all(p.requires_grad for p in model.text_model.parameters())
    reference = BertForMaskedLM.from_pretrained(bert_dir).bert  # the first two layers are the saved ones
    torch.testing.assert_close(
        model.text_model.encoder.layer[1].output.dense.weight, reference.encoder.layer[1].output.dense.weight
    )
    batch = _batch(bert_processor)
    assert (batch["input_ids"][:, 0] == bert_processor.tokenizer.cls_token_id).all() and "token_type_ids" not in batch
    model.train()
    out = model(**batch, return_loss=True)
    out.loss.backward()
    assert model.text_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        states = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pooled = model.text_forward(batch["attention_mask"], input_ids=batch["input_ids"]).pooler_output
    torch.testing.assert_close(pooled, states.last_hidden_state[:, 0])


def test_whole_tower_saves_in_full_and_loads_as_remote_code(bert_dir, bert_processor, tmp_path):
    model = _bert_clip(bert_dir).eval()
    model.set_prompt_classes(["edema", "cardiomegaly"], bert_processor)
    with pytest.raises(ValueError, match="peft_type NONE trains the whole text tower"):
        model.should_save_base_model(False)
    model.save_pretrained(tmp_path / "model")
    bert_processor.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "text_tower_cleft.py").is_file()
    loaded = CLEFTModel.from_pretrained(tmp_path / "model").eval()
    assert all(p.requires_grad for p in loaded.text_model.parameters())
    batch = bert_processor(text=["no edema", "cardiomegaly"], images=[torch.zeros(40, 40), torch.ones(40, 40)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, model(**batch).logits_per_image)
    result = run_isolated(tmp_path, ISOLATED, tmp_path / "model", tmp_path / "out.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], model(**batch).logits_per_image, atol=1e-5, rtol=0)


def test_lora_encoder_adapter_only_round_trip(bert_dir, bert_processor, tmp_path):
    model = _bert_clip(bert_dir, peft_config={"peft_type": "LORA", "r": 4}).eval()
    trainable = {n for n, p in model.text_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    model.save_pretrained(tmp_path / "model", save_base_model=False)
    loaded = CLEFTModel.from_pretrained(tmp_path / "model").eval()
    batch = _batch(bert_processor)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, model(**batch).logits_per_image)


def test_stage_two_context_after_cls_and_pipeline(bert_dir, bert_processor):
    from transformers import pipeline

    model = _bert_clip(bert_dir).eval()
    model.setup_prompt_learning(["edema", "pleural effusion"], bert_processor, task="finding")
    ids, _ = model.stored_class_inputs()
    assert (ids[:, 0] == bert_processor.tokenizer.cls_token_id).all()
    captured = {}
    hook = model.text_model.register_forward_pre_hook(lambda m, a, kw: captured.update(kw), with_kwargs=True)
    with torch.no_grad():
        model.get_prompt_features()
    hook.remove()
    embeds, cls_embedding = captured["inputs_embeds"], model.get_input_embeddings().weight[ids[0, 0]]
    torch.testing.assert_close(embeds[:, 0], cls_embedding.expand(2, -1))  # [CLS] stays first ...
    torch.testing.assert_close(embeds[:, 1:5], model.prompt_learner.ctx.expand(2, -1, -1))  # ... then the context
    pixels = _batch(bert_processor)["pixel_values"]
    scores = model.zero_shot_classify(pixels, use_learned_prompts=True)
    assert scores.shape == (3, 2) and torch.allclose(scores.sum(-1), torch.ones(3))
    classifier = pipeline(
        "zero-shot-image-classification",
        model=model,
        tokenizer=bert_processor.tokenizer,
        image_processor=bert_processor.image_processor,
    )
    labels = ["edema", "cardiomegaly"]
    images = [torch.rand(3, 40, 40).mul(255).byte().permute(1, 2, 0).numpy() for _ in range(2)]
    from PIL import Image

    results = classifier(
        [Image.fromarray(i) for i in images], candidate_labels=labels, hypothesis_template=model.config.prompt_template
    )
    direct = model.zero_shot_classify(
        bert_processor(images=[Image.fromarray(i) for i in images])["pixel_values"], labels, bert_processor
    )
    got = torch.tensor([{r["label"]: r["score"] for r in result}[label] for result in results for label in labels])
    torch.testing.assert_close(got.view(2, 2), direct, atol=1e-5, rtol=1e-5)


def test_pooling_choices_and_mlp_head(bert_dir, bert_processor, tmp_path):
    from cleft_hf.training.config import ConfigError, PretrainArguments

    model = _bert_clip(bert_dir, text_pooling="mean", projection_head="mlp").eval()
    batch = _batch(bert_processor)
    with torch.no_grad():
        states = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pooled = model.text_forward(batch["attention_mask"], input_ids=batch["input_ids"]).pooler_output
    mask = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(pooled, (states.last_hidden_state * mask).sum(1) / mask.sum(1))
    text_config = model.config.text_config.to_dict()
    with pytest.raises(ValueError, match="does not fit an encoder text tower"):
        CLEFTConfig(text_config=text_config, text_pooling="last", peft_config=WHOLE)
    with pytest.raises(ValueError, match="does not fit a causal LLM text tower"):
        CLEFTConfig(text_pooling="cls")
    model.train()
    one = {key: value[:1] for key, value in batch.items()}
    with pytest.raises(ValueError, match="needs at least 2 examples per training batch"):
        model(**one)
    model.configure_for_prompt_tuning(freeze_vision=True)  # frozen heads: running statistics, any batch size
    before = model.text_projection.head[1].running_mean.clone()
    model(**one)
    torch.testing.assert_close(model.text_projection.head[1].running_mean, before)
    with pytest.raises(ConfigError, match="per_device_batch_size >= 2"):
        PretrainArguments(data_root=str(tmp_path), per_device_batch_size=1, model_config={"projection_head": "mlp"})


def test_model_card_describes_the_baseline(bert_dir, bert_processor, tmp_path):
    from cleft_hf.hub import write_model_card

    model = _bert_clip(bert_dir, projection_head="mlp")
    model.save_pretrained(tmp_path / "model")
    bert_processor.save_pretrained(tmp_path / "model")
    card = write_model_card(tmp_path / "model").read_text()
    assert "text encoder loaded from a local folder" in card and "hidden state of the [CLS] token" in card
    assert "none: every text-tower parameter trains" in card and "trained whole (no frozen base)" in card
    assert "MLP (Linear, BatchNorm, ReLU, Linear, BatchNorm)" in card


@pytest.mark.parametrize("recipe", ["cxr_bert_clip.yaml", "embed_bert_clip.yaml"])
def test_baseline_recipes_load(recipe, bert_dir, tmp_path):
    from pathlib import Path

    from cleft_hf.arguments import load_arguments
    from cleft_hf.training.config import ConfigError, PretrainArguments

    path = Path(__file__).resolve().parent.parent / "examples" / "configs" / recipe
    local = {"data_root": str(tmp_path), "model_config": {"text_model_name_or_path": str(bert_dir)}}
    with pytest.raises(ConfigError, match="text_num_layers=6 is larger than the text model's 3 layers"):
        load_arguments(PretrainArguments, path, local, section="pretrain")  # checked against the BERT's config
    local["model_config"]["text_num_layers"] = 2
    args = load_arguments(PretrainArguments, path, local, section="pretrain")
    assert args.learning_rate == 2e-5 and args.weight_decay == 0.05 and args.warmup_steps == 0.4 * args.max_steps
    assert args.model_config["peft_config"] == WHOLE and args.model_config["projection_head"] == "mlp"
    assert args.max_text_length == 64 and args.per_device_batch_size == 72


def test_causal_llm_cut_to_its_first_layers(saved_llm, family, tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = CLEFTModel.from_vision_text_pretrained(
        TINY_VISION_MODEL,
        str(saved_llm),
        vision_pretrained=False,
        vision_model_kwargs=tiny_vision_kwargs(),
        image_size=32,
        projection_dim=16,
        prompt_num_context_tokens=4,
        text_num_layers=1,
    )
    full = AutoModel.from_pretrained(saved_llm)
    inner = model.text_model.get_base_model()
    layers = inner.h if family == "gpt2" else inner.layers
    assert len(layers) == 1 and model.config.text_config.num_hidden_layers == 1
    first = dict((full.h if family == "gpt2" else full.layers)[0].named_parameters())
    for name, parameter in layers[0].named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(parameter, first[name.replace("base_layer.", "")])
    model.save_pretrained(tmp_path / "model", save_base_model=False)  # adapter-only: the base's first layer again
    loaded = CLEFTModel.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(loaded.text_model.state_dict(), model.text_model.state_dict())
