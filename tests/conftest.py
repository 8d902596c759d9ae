"""Shared fixtures: tokenizers trained on the fly, tiny CLEFT models, saved tiny LLMs (no network)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cleft_hf import CLEFTImageProcessor, CLEFTModel, CLEFTProcessor
from cleft_hf.language_model.tokenizer_training import train_tokenizer
from cleft_hf.tiny import tiny_cleft_config, tiny_text_config

FAMILIES = ("gpt2", "llama")
FINDINGS = ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural effusion"]
CORPUS = [
    f"{lead} {finding} {tail}"
    for lead in ("this is a chest x ray of a patient with", "findings consistent with", "there is no")
    for finding in FINDINGS
    for tail in ("in the right lower lobe.", "bilaterally.", "since the prior study.", ".")
]


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    """Tokenizers trained with `tokenizers`, saved, to be loaded back through `AutoTokenizer`."""
    dirs = {}
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(f"tok_{family}")
        train_tokenizer(CORPUS, family=family, vocab_size=400).save_pretrained(path)
        dirs[family] = path
    return dirs


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tokenizer(tokenizer_dirs, family):
    return AutoTokenizer.from_pretrained(tokenizer_dirs[family])


@pytest.fixture
def processor(tokenizer):
    return CLEFTProcessor(CLEFTImageProcessor(size=32, crop_size=32), tokenizer, max_length=48)


@pytest.fixture
def make_model(family, tokenizer):
    def build(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return CLEFTModel(tiny_cleft_config(family, tokenizer, **overrides))

    return build


@pytest.fixture
def model(make_model):
    return make_model()


@pytest.fixture
def saved_llm(tmp_path, family, tokenizer):
    """A tiny causal LM saved with save_pretrained (safetensors), standing in for a Hub LLM id."""
    torch.manual_seed(1)
    lm = AutoModelForCausalLM.from_config(tiny_text_config(family, tokenizer))
    path = tmp_path / f"llm_{family}"
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def batch(processor):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(40, 48, generator=generator) for _ in range(3)]
    texts = [CORPUS[0], CORPUS[5] + " also a much longer report sentence here.", CORPUS[9]]
    return processor(text=texts, images=images)
