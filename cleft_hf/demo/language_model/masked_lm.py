"""A small BERT made on the fly: WordPiece tokenizer + masked-language-model pretraining on a report corpus.

The CLIP baseline of the paper trains a BERT encoder (Bio_ClinicalBERT) as its text tower. Where no BERT can be
downloaded (the demo's comparison, tests), `pretrain_masked_lm` makes one the way `pretrain_causal_lm` makes the
demo LLM: a lower-cased WordPiece tokenizer trained with `tokenizers` ([PAD] [UNK] [CLS] [SEP] [MASK], texts as
``[CLS] … [SEP]``), a `BertForMaskedLM` from `tiny_bert_config`, BERT's masking (15 % of the tokens: 80 %
[MASK], 10 % random, 10 % kept), the same optimiser, schedule and time budget as the causal LM, and
`save_pretrained`, so CLEFT loads it with `text_model_name_or_path` like `emilyalsentzer/Bio_ClinicalBERT`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
import json
import logging
import math
import os
import random
import time

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
import torch
from torch import nn
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from .lm_training_loop import LMTrainingSettings, default_num_threads, train_lm
from .pretraining import SUMMARY_FILE, PretrainResult
from .token_windows import split_train_eval

logger = logging.getLogger(__name__)

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MASK_PROBABILITY = 0.15


def train_wordpiece_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 512, model_max_length: int = 128
) -> BertTokenizerFast:
    """A lower-cased WordPiece tokenizer trained on `texts`, as a `BertTokenizerFast` ([CLS] text [SEP])."""
    corpus = [text for text in texts if isinstance(text, str) and text.strip()]
    if not corpus:
        raise ValueError("texts is empty (no non-blank string): cannot train a tokenizer")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS), show_progress=False)
    backend.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    backend.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        padding_side="right",
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
    )


def tiny_bert_config(
    vocab_size: int,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    max_positions: int = 128,
    pad_token_id: int = 0,
) -> BertConfig:
    """A small `BertConfig` (feed-forward width 4 x hidden)."""
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
    )


def mask_tokens(
    input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of `(batch, length)` ids (`special`: True where nothing may be masked) -> (inputs,
    labels with -100 where no prediction is asked)."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < MASK_PROBABILITY) & ~special
    labels = input_ids.masked_fill(~chosen, -100)
    draw = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(chosen & (draw < 0.8), mask_id)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    return torch.where(swap, random_ids, inputs), labels


def collate_texts(windows: Sequence[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token lists to the longest: `input_ids`, `attention_mask` `(batch, length)`."""
    length = max(len(window) for window in windows)
    input_ids = torch.full((len(windows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, window in enumerate(windows):
        input_ids[row, : len(window)] = torch.tensor(window)
        attention_mask[row, : len(window)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class MaskedLMLoss:
    """`(model, batch) -> (summed NLL of the masked tokens, their count)`, masks drawn from its own generator."""

    def __init__(self, tokenizer: BertTokenizerFast, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self.special_ids = torch.tensor(tokenizer.all_special_ids)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        special = torch.isin(batch["input_ids"], self.special_ids) | (batch["attention_mask"] == 0)
        inputs, labels = mask_tokens(batch["input_ids"], special, self.mask_id, self.vocab_size, self.generator)
        logits = model(input_ids=inputs, attention_mask=batch["attention_mask"]).logits
        nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
        return nll, int((labels != -100).sum())


@torch.no_grad()
def masked_perplexity(
    model: nn.Module, windows: Sequence[list[int]], loss: MaskedLMLoss, batch_size: int = 64
) -> float:
    """exp(mean NLL of masked tokens) over `windows` (masks from `loss`'s generator)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        nll, n = loss(model, collate_texts(windows[start : start + batch_size], 0))
        total, count = total + float(nll), count + n
    return math.exp(total / max(count, 1))


def pretrain_masked_lm(
    texts: Iterable[str],
    output_dir: str | os.PathLike,
    *,
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
    progress: bool = True,
    **_causal_only: object,
) -> PretrainResult:
    """Train WordPiece tokenizer + small BERT with masked-LM on `texts` and save both to `output_dir`.

    Takes the arguments of `pretrain_causal_lm` (a demo's `language_model` section; `family` and `append_eos`,
    which only causal LMs have, are ignored) and returns the same `PretrainResult`, its perplexity over masked
    held-out tokens."""
    settings = LMTrainingSettings.from_arguments(locals())
    started = time.perf_counter()
    corpus = [text for text in texts if isinstance(text, str) and text.strip()]
    train_texts, eval_texts = split_train_eval(corpus, eval_fraction, seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or default_num_threads())
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        tokenizer = train_wordpiece_tokenizer(train_texts, vocab_size=vocab_size, model_max_length=seq_len)
        config = tiny_bert_config(
            len(tokenizer),
            num_layers=num_layers,
            hidden_size=hidden_size,
            num_heads=num_heads,
            max_positions=seq_len,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = BertForMaskedLM(config)
        model.train()
        encode = lambda batch: tokenizer(batch, truncation=True, max_length=seq_len)["input_ids"]
        train_windows, eval_windows = encode(train_texts), encode(eval_texts)
        loss = MaskedLMLoss(tokenizer, seed)
        curve, stopped_by_budget, total_steps = train_lm(
            model,
            train_windows,
            tokenizer.pad_token_id,
            settings,
            started=started,
            loss_fn=lambda m, b: loss(m, _without_labels(b)),
        )
        eval_ppl = masked_perplexity(model, eval_windows, MaskedLMLoss(tokenizer, seed + 1))
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        result = PretrainResult(
            path=os.fspath(output_dir),
            train_loss_curve=curve,
            eval_perplexity=eval_ppl,
            seconds=time.perf_counter() - started,
            uniform_perplexity=float(len(tokenizer)),
            num_steps=len(curve),
            num_parameters=sum(p.numel() for p in model.parameters()),
            num_train_texts=len(train_texts),
            num_eval_texts=len(eval_texts),
            stopped_by_time_budget=stopped_by_budget,
            extra={
                "family": "bert",
                "objective": "masked_lm",
                "planned_steps": total_steps,
                "num_threads": torch.get_num_threads(),
            },
        )
        with open(os.path.join(output_dir, SUMMARY_FILE), "w", encoding="utf-8") as handle:
            json.dump(asdict(result), handle, indent=2)
        logger.info(
            "demo BERT: masked-token perplexity %.2f (uniform %d) after %d steps in %.1f s",
            eval_ppl,
            len(tokenizer),
            len(curve),
            result.seconds,
        )
        return result
    finally:
        torch.set_num_threads(previous_threads)


def _without_labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


__all__ = ["mask_tokens", "pretrain_masked_lm", "tiny_bert_config", "train_wordpiece_tokenizer"]
