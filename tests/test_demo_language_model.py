"""Tests for cleft_hf.demo.language_model: tokenizer training and small causal-LM pretraining."""

import json
import math
import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from cleft_hf.demo.language_model import pretrain_causal_lm, tiny_causal_lm_config, train_tokenizer
from cleft_hf.demo.language_model.token_windows import collate_windows, encode_documents, split_train_eval

FINDINGS = ["cardiomegaly", "pleural effusion", "pulmonary edema", "consolidation", "atelectasis", "pneumothorax"]
SIDES = ["left", "right", "bilateral"]
SEVERITIES = ["small", "moderate", "large", "mild"]


def make_reports(count: int, seed: int = 0) -> list[str]:
    """Templated chest X-ray reports: positive findings, negations, normal studies."""
    rng = random.Random(seed)
    reports = []
    for _ in range(count):
        if rng.random() < 0.25:
            reports.append(
                rng.choice(
                    [
                        "No acute cardiopulmonary process.",
                        "The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax.",
                        "Normal chest radiograph. No focal consolidation.",
                    ]
                )
            )
            continue
        positives = rng.sample(FINDINGS, rng.randint(1, 2))
        negatives = [finding for finding in FINDINGS if finding not in positives]
        sentences = [f"There is {rng.choice(SEVERITIES)} {rng.choice(SIDES)} {finding}." for finding in positives]
        sentences.append(f"No {rng.choice(negatives)} or {rng.choice(negatives)}.")
        if rng.random() < 0.5:
            sentences.append(
                rng.choice(
                    [
                        "Heart size is normal.",
                        "Lines and tubes are unchanged.",
                        "Findings are unchanged from the prior study.",
                    ]
                )
            )
        reports.append(" ".join(sentences))
    return reports


@pytest.fixture(scope="module")
def reports():
    return make_reports(300)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tokenizer_round_trips_through_save_and_auto_tokenizer(tmp_path, reports, family):
    tokenizer = train_tokenizer(reports, family=family, vocab_size=512, model_max_length=64)
    assert len(tokenizer) <= 512 and tokenizer.padding_side == "right" and tokenizer.model_max_length == 64
    samples = [reports[0], "Moderate left pleural effusion, ünseen chars ™.", "a"]
    expected = tokenizer(samples, padding=True)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    got = reloaded(samples, padding=True)
    assert got["input_ids"] == expected["input_ids"]
    assert got["attention_mask"] == expected["attention_mask"]
    assert reloaded.padding_side == "right" and reloaded.pad_token == tokenizer.pad_token
    # unseen characters survive (gpt2: byte level; llama: byte fallback)
    ids = reloaded(samples[1], add_special_tokens=False)["input_ids"]
    assert reloaded.decode(ids) == samples[1]
    assert reloaded.unk_token_id not in ids or family == "gpt2"


def test_gpt2_family_special_tokens(reports):
    tokenizer = train_tokenizer(reports, family="gpt2")
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.unk_token == tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer("No pleural effusion.")["input_ids"]
    assert tokenizer.eos_token_id not in ids  # no specials from the post-processor, as GPT-2
    assert tokenizer.decode(ids) == "No pleural effusion."
    with_eos = train_tokenizer(reports, family="gpt2", append_eos=True)("No pleural effusion.")["input_ids"]
    assert with_eos == ids + [tokenizer.eos_token_id]


def test_llama_family_special_tokens(reports):
    tokenizer = train_tokenizer(reports, family="llama")
    assert (tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
    )
    special_ids = [tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert special_ids == [0, 1, 2, 3]
    assert tokenizer.convert_tokens_to_ids("<0x41>") == 4 + 0x41  # byte tokens follow the specials
    ids = tokenizer("No pleural effusion.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[1].startswith("▁")  # metaspace prefix
    assert tokenizer.decode(ids, skip_special_tokens=True) == "No pleural effusion."
    with_eos = train_tokenizer(reports, family="llama", append_eos=True)("No pleural effusion.")["input_ids"]
    assert with_eos == ids + [tokenizer.eos_token_id]


def test_tokenizer_rejects_bad_input(reports):
    with pytest.raises(ValueError, match="family"):
        train_tokenizer(reports, family="bert")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(reports, family="llama", vocab_size=200)
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer(["", "  "])
    with pytest.raises(TypeError, match="texts\\[1\\]"):
        train_tokenizer(["fine", 3])


def test_tiny_config_sizes_and_special_ids(reports):
    tokenizer = train_tokenizer(reports, family="llama", vocab_size=400)
    config = tiny_causal_lm_config(
        "llama", len(tokenizer), num_layers=3, hidden_size=32, num_heads=2, max_positions=48, tokenizer=tokenizer
    )
    assert isinstance(config, LlamaConfig)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (3, 32, 2)
    assert (config.max_position_embeddings, config.vocab_size, config.intermediate_size) == (48, len(tokenizer), 128)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 3)
    gpt2 = tiny_causal_lm_config("gpt2", 300, num_layers=2, hidden_size=64, num_heads=4, max_positions=32)
    assert isinstance(gpt2, GPT2Config)
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.n_head, gpt2.n_positions, gpt2.vocab_size) == (2, 64, 4, 32, 300)
    with pytest.raises(ValueError, match="num_heads"):
        tiny_causal_lm_config("gpt2", 300, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        tiny_causal_lm_config("llama", 100, tokenizer=tokenizer)


def test_windows_and_padding_mask_labels_not_eos(reports):
    tokenizer = train_tokenizer(reports, family="gpt2")
    windows = encode_documents(["No effusion.", reports[1] * 4], tokenizer, seq_len=16)
    assert windows[0][-1] == tokenizer.eos_token_id and all(len(w) <= 16 for w in windows) and len(windows) > 2
    batch = collate_windows(windows[:2], tokenizer.pad_token_id)
    short = len(windows[0])
    assert batch["labels"][0, short - 1] == tokenizer.eos_token_id  # real eos is a target ...
    assert (batch["labels"][0, short:] == -100).all()  # ... pads (same id) are not
    train, held_out = split_train_eval(reports, 0.05, seed=0)
    assert (len(train), len(held_out)) == (285, 15) and sorted(train + held_out) == sorted(reports)
    assert split_train_eval(reports, 0.05, seed=0) == (train, held_out)
    assert split_train_eval(reports, 0.05, seed=1)[1] != held_out
    with pytest.raises(ValueError, match="at least 2"):
        split_train_eval(["only one"], 0.05, seed=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pretrain_saves_loadable_model_and_learns(tmp_path, reports, family):
    kwargs = dict(
        family=family,
        vocab_size=400,
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        seq_len=64,
        batch_size=16,
        max_steps=30,
        lr=1e-2,
        seed=0,
        progress=False,
    )
    result = pretrain_causal_lm(reports, tmp_path / "a", **kwargs)
    assert result.num_steps == len(result.train_loss_curve) == 30
    first, last = sum(result.train_loss_curve[:5]) / 5, sum(result.train_loss_curve[-5:]) / 5
    assert last < 0.7 * first
    assert result.eval_perplexity < result.unigram_perplexity < result.uniform_perplexity
    assert math.isfinite(result.eval_perplexity) and result.num_eval_texts == 15

    model = AutoModelForCausalLM.from_pretrained(result.path)
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    assert os.path.isfile(os.path.join(result.path, "model.safetensors"))
    assert model.config.model_type == family and model.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(["No pleural effusion.", reports[2]], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tokenizer))
    summary = json.loads((tmp_path / "a" / "pretraining_summary.json").read_text())
    assert summary["eval_perplexity"] == pytest.approx(result.eval_perplexity)

    # the same seed gives the same run (to float rounding: CPU kernels may split sums differently between
    # runs; seen once differing in the 7th digit)
    again = pretrain_causal_lm(reports, tmp_path / "b", **kwargs)
    assert again.train_loss_curve == pytest.approx(result.train_loss_curve, rel=1e-5, abs=1e-6)
    reloaded = AutoModelForCausalLM.from_pretrained(again.path).state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reloaded[name], rtol=1e-5, atol=1e-6, msg=name)


def test_pretrain_time_budget_replans_steps(tmp_path, reports):
    result = pretrain_causal_lm(
        reports,
        tmp_path,
        vocab_size=400,
        num_layers=1,
        hidden_size=32,
        num_heads=2,
        seq_len=64,
        batch_size=8,
        max_steps=100_000,
        time_budget_s=3.0,
        progress=False,
    )
    assert 5 < result.num_steps < 100_000 and result.seconds < 10.0
