"""Build a small GPT-2- or Llama-family causal LM and pretrain it on a report corpus.

CLEFT adapts a *pretrained*, frozen causal LLM. Where no real LLM can be downloaded (the built-in demo,
tests), `pretrain_causal_lm` makes one: it trains a tokenizer on the corpus, builds a small model from
`tiny_causal_lm_config`, trains it as a causal LM with a plain torch loop (`lm_training_loop`: AdamW, linear
warm-up then cosine decay, gradient clipping), measures held-out perplexity against unigram and uniform baselines and
writes model + tokenizer with `save_pretrained` (safetensors). The folder then loads through
`AutoModelForCausalLM.from_pretrained(path)` exactly like a user's real LLM id.

Sequences: one document per row, starting at position 0 (as CLEFT feeds a single report), ending with eos
(llama family: ``<s> … </s>``); rows are right-padded per batch and padded positions are masked out of the
labels by the attention mask (gpt2's pad token *is* its eos, so masking by id would drop real eos targets).
Documents longer than ``seq_len`` are cut into consecutive windows (`token_windows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
import json
import logging
import math
import os
import random
import time

import torch
from torch import nn
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig, PreTrainedTokenizerBase

from .lm_training_loop import LMTrainingSettings, default_num_threads, train_lm
from .token_windows import collate_windows, encode_documents, split_train_eval
from .tokenizer_training import TOKENIZER_FAMILIES, train_tokenizer

logger = logging.getLogger(__name__)

SUMMARY_FILE = "pretraining_summary.json"


def tiny_causal_lm_config(
    family: str,
    vocab_size: int,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    max_positions: int = 128,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dropout: float = 0.0,
) -> PretrainedConfig:
    """A small `GPT2Config` (``family="gpt2"``) or `LlamaConfig` (``"llama"``, MLP width 4 × hidden).

    With ``tokenizer``, ``vocab_size`` must cover ``len(tokenizer)`` and bos/eos/pad ids are taken from it.
    Word embeddings are tied to the LM head in both families (fewer parameters for a small model).
    """
    if family not in TOKENIZER_FAMILIES:
        raise ValueError(f"family={family!r} is not supported; choose one of {TOKENIZER_FAMILIES}")
    for name, value in (
        ("vocab_size", vocab_size),
        ("num_layers", num_layers),
        ("hidden_size", hidden_size),
        ("num_heads", num_heads),
        ("max_positions", max_positions),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    special_ids = {}
    if tokenizer is not None:
        if len(tokenizer) > vocab_size:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
        special_ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            tie_word_embeddings=True,
            **special_ids,
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        attention_dropout=dropout,
        tie_word_embeddings=True,
        **special_ids,
    )


@dataclass
class PretrainResult:
    """Outcome of `pretrain_causal_lm`; perplexities are per predicted token on the held-out texts."""

    path: str
    train_loss_curve: list[float]
    eval_perplexity: float
    seconds: float
    unigram_perplexity: float = math.nan
    uniform_perplexity: float = math.nan
    num_steps: int = 0
    num_parameters: int = 0
    num_train_texts: int = 0
    num_eval_texts: int = 0
    stopped_by_time_budget: bool = False
    extra: dict = field(default_factory=dict)


def next_token_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token negative log-likelihood (scalar) and the number of predicted tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    return nll, int((targets != -100).sum())


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module, windows: Sequence[list[int]], pad_token_id: int, batch_size: int = 64
) -> float:
    """exp(mean next-token NLL) of ``model`` over ``windows`` (the first token of a window is not predicted)."""
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(windows), batch_size):
        nll, count = next_token_nll(model, collate_windows(windows[start : start + batch_size], pad_token_id))
        total_nll, total_tokens = total_nll + float(nll), total_tokens + count
    model.train(was_training)
    if total_tokens == 0:
        raise ValueError("no token to predict in the evaluation windows")
    return math.exp(total_nll / total_tokens)


def unigram_perplexity(
    train_windows: Sequence[list[int]], eval_windows: Sequence[list[int]], vocab_size: int
) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on the training targets (the baseline)."""
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for window in train_windows:
        counts += torch.bincount(torch.tensor(window[1:]), minlength=vocab_size).double()
    log_probs = counts.log() - counts.sum().log()
    targets = torch.tensor([token for window in eval_windows for token in window[1:]])
    return math.exp(float(-log_probs[targets].mean()))


def pretrain_causal_lm(
    texts: Iterable[str],
    output_dir: str | os.PathLike,
    *,
    family: str = "gpt2",
    vocab_size: int = 512,
    num_layers: int = 4,
    hidden_size: int = 128,
    num_heads: int = 4,
    seq_len: int = 128,
    batch_size: int = 32,
    max_steps: int = 400,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.06,
    eval_fraction: float = 0.05,
    seed: int = 0,
    time_budget_s: float | None = None,
    num_threads: int | None = None,
    append_eos: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Train tokenizer + small causal LM on ``texts`` and save both to ``output_dir`` (see module docstring).

    Deterministic for a given ``seed`` on CPU with the same thread count, unless ``time_budget_s`` is given:
    then the step count is re-planned at steps 5, 10 and every 25 (``max_steps`` is the ceiling) from the measured
    step time so the run fits the budget, the cosine schedule follows the new total, and training stops
    outright if the budget is spent. ``append_eos`` is passed
    to `train_tokenizer` (the saved tokenizer then appends eos itself). ``num_threads`` defaults to the
    available cores (at most 8); torch's previous setting is restored on return.
    """
    settings = LMTrainingSettings.from_arguments(locals())
    started = time.perf_counter()
    corpus = [text for text in texts if isinstance(text, str) and text.strip()]
    train_texts, eval_texts = split_train_eval(corpus, eval_fraction, seed)
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("max_steps", max_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"time_budget_s={time_budget_s} must be positive")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or default_num_threads())
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        tokenizer = train_tokenizer(
            train_texts, family=family, vocab_size=vocab_size, model_max_length=seq_len, append_eos=append_eos
        )
        config = tiny_causal_lm_config(
            family,
            len(tokenizer),
            num_layers=num_layers,
            hidden_size=hidden_size,
            num_heads=num_heads,
            max_positions=seq_len,
            tokenizer=tokenizer,
        )
        model = AutoModelForCausalLM.from_config(config)
        model.train()
        train_windows = encode_documents(train_texts, tokenizer, seq_len)
        eval_windows = encode_documents(eval_texts, tokenizer, seq_len)
        if not train_windows or not eval_windows:
            raise ValueError("texts are too short: no train or eval document has two tokens")
        num_parameters = sum(p.numel() for p in model.parameters())
        logger.info(
            "pretraining %s LM (%d params, vocab %d) on %d train / %d eval texts (%d / %d windows), %d threads",
            family,
            num_parameters,
            len(tokenizer),
            len(train_texts),
            len(eval_texts),
            len(train_windows),
            len(eval_windows),
            torch.get_num_threads(),
        )

        curve, stopped_by_budget, total_steps = train_lm(
            model, train_windows, tokenizer.pad_token_id, settings, started=started, loss_fn=next_token_nll
        )

        model.eval()
        eval_ppl = evaluate_perplexity(model, eval_windows, tokenizer.pad_token_id)
        unigram_ppl = unigram_perplexity(train_windows, eval_windows, len(tokenizer))
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        result = PretrainResult(
            path=os.fspath(output_dir),
            train_loss_curve=curve,
            eval_perplexity=eval_ppl,
            seconds=time.perf_counter() - started,
            unigram_perplexity=unigram_ppl,
            uniform_perplexity=float(len(tokenizer)),
            num_steps=len(curve),
            num_parameters=num_parameters,
            num_train_texts=len(train_texts),
            num_eval_texts=len(eval_texts),
            stopped_by_time_budget=stopped_by_budget,
            extra={"family": family, "planned_steps": total_steps, "num_threads": torch.get_num_threads()},
        )
        with open(os.path.join(output_dir, SUMMARY_FILE), "w", encoding="utf-8") as handle:
            json.dump(asdict(result), handle, indent=2)
        logger.info(
            "held-out perplexity %.2f (unigram %.2f, uniform %.0f) after %d steps in %.1f s",
            eval_ppl,
            unigram_ppl,
            len(tokenizer),
            len(curve),
            result.seconds,
        )
        return result
    finally:
        torch.set_num_threads(previous_threads)
