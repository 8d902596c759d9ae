"""Build a small GPT-2- or Llama-family causal LM and pretrain it on a report corpus.

CLEFT adapts a *pretrained*, frozen causal LLM. Where no real LLM can be downloaded (the built-in demo,
tests), `pretrain_causal_lm` makes one: it trains a tokenizer on the corpus, builds a small model from
`tiny_causal_lm_config`, trains it as a causal LM with a plain torch loop (AdamW, linear warm-up then
cosine decay, gradient clipping), measures held-out perplexity against unigram and uniform baselines and
writes model + tokenizer with `save_pretrained` (safetensors). The folder then loads through
`AutoModelForCausalLM.from_pretrained(path)` exactly like a user's real LLM id.

Sequences: one document per row, starting at position 0 (as CLEFT feeds a single report), ending with eos
(llama family: ``<s> … </s>``); rows are right-padded per batch and padded positions are masked out of the
labels by the attention mask (gpt2's pad token *is* its eos, so masking by id would drop real eos targets).
Documents longer than ``seq_len`` are cut into consecutive windows.
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
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig, PreTrainedTokenizerBase

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


def split_train_eval(texts: Sequence[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed`` and hold out ``eval_fraction`` of the texts (at least one)."""
    if len(texts) < 2:
        raise ValueError(f"texts has {len(texts)} non-blank item(s); pretraining needs at least 2 (train + eval)")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be strictly between 0 and 1")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    num_eval = min(len(texts) - 1, max(1, round(eval_fraction * len(texts))))
    return [texts[i] for i in order[num_eval:]], [texts[i] for i in order[:num_eval]]


def encode_documents(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, seq_len: int) -> list[list[int]]:
    """Token ids per document (tokenizer specials, eos appended), cut into windows of at most ``seq_len``."""
    windows = []
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        if not ids or ids[-1] != tokenizer.eos_token_id:
            ids = ids + [tokenizer.eos_token_id]
        windows.extend(ids[start : start + seq_len] for start in range(0, len(ids), seq_len))
    return [window for window in windows if len(window) >= 2]


def collate_windows(windows: Sequence[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest window: ``input_ids``, ``attention_mask``, ``labels`` (B, L); pads → -100."""
    length = max(len(window) for window in windows)
    input_ids = torch.full((len(windows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), length), dtype=torch.long)
    for row, window in enumerate(windows):
        input_ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
        attention_mask[row, : len(window)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


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


def _cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and embeddings (1-D or embedding tables)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim < 2 or "wte" in name or "wpe" in name or "embed" in name
        (no_decay if skip else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def _default_num_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


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
    started = time.perf_counter()
    corpus = [text for text in texts if isinstance(text, str) and text.strip()]
    train_texts, eval_texts = split_train_eval(corpus, eval_fraction, seed)
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("max_steps", max_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"time_budget_s={time_budget_s} must be positive")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or _default_num_threads())
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

        curve, stopped_by_budget, total_steps = _train_loop(
            model,
            train_windows,
            tokenizer.pad_token_id,
            batch_size=batch_size,
            max_steps=max_steps,
            lr=lr,
            weight_decay=weight_decay,
            warmup_fraction=warmup_fraction,
            seed=seed,
            time_budget_s=time_budget_s,
            started=started,
            progress=progress,
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


def _train_loop(
    model: nn.Module,
    windows: list[list[int]],
    pad_token_id: int,
    *,
    batch_size: int,
    max_steps: int,
    lr: float,
    weight_decay: float,
    warmup_fraction: float,
    seed: int,
    time_budget_s: float | None,
    started: float,
    progress: bool,
    loss_fn=next_token_nll,
) -> tuple[list[float], bool, int]:
    """Run the optimisation; returns (per-step mean token loss, stopped by the time budget, planned steps).
    `loss_fn(model, batch) -> (summed NLL, token count)` (default: next-token prediction)."""
    optimizer = _optimizer(model, lr, weight_decay)
    plan = {"total": max_steps, "warmup": max(1, round(warmup_fraction * max_steps))}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_with_warmup(step, plan["warmup"], plan["total"])
    )
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    curve: list[float] = []
    loop_started = time.perf_counter()
    stopped_by_budget = False
    bar = tqdm(total=max_steps, desc="pretraining LM", disable=not progress, leave=False)
    for step in range(max_steps):
        if step >= plan["total"]:
            break
        if len(order) < batch_size:
            order.extend(torch.randperm(len(windows), generator=generator).tolist())
        batch = collate_windows([windows[i] for i in order[:batch_size]], pad_token_id)
        del order[:batch_size]
        nll, count = loss_fn(model, batch)
        loss = nll / max(count, 1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite LM loss {float(loss)} at step {step}; lower lr={lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        curve.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{curve[-1]:.3f}")
        if time_budget_s is not None:
            elapsed_total = time.perf_counter() - started
            if elapsed_total > time_budget_s:
                logger.warning("time budget %.0f s exhausted at step %d; stopping early", time_budget_s, step + 1)
                stopped_by_budget = True
                break
            if (step + 1) in (5, 10) or (step + 1) % 25 == 0:
                _replan(
                    plan,
                    step + 1,
                    max_steps,
                    time_budget_s,
                    elapsed_total,
                    (time.perf_counter() - loop_started) / (step + 1),
                    warmup_fraction,
                )
                bar.total = plan["total"]
        if step % 50 == 0 or step + 1 == plan["total"]:
            logger.info("step %d/%d loss %.4f lr %.2e", step + 1, plan["total"], curve[-1], scheduler.get_last_lr()[0])
    bar.close()
    return curve, stopped_by_budget, plan["total"]


def _replan(
    plan: dict,
    done: int,
    max_steps: int,
    time_budget_s: float,
    elapsed: float,
    per_step: float,
    warmup_fraction: float,
) -> None:
    """Set ``plan["total"]`` to the steps that fit the budget (keeping ~15 % of it for evaluation and saving)."""
    affordable = done + int((0.85 * time_budget_s - elapsed) / per_step)
    total = max(done + 1, min(max_steps, affordable))
    if total != plan["total"]:
        logger.info(
            "time budget %.0f s at %.3f s/step: training %d of at most %d steps",
            time_budget_s,
            per_step,
            total,
            max_steps,
        )
    plan["total"] = total
    plan["warmup"] = min(plan["warmup"], max(1, round(warmup_fraction * total)))
