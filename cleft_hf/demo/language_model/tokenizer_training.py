"""Train a small GPT-2- or Llama-style BPE tokenizer on a text corpus with the `tokenizers` library.

CLEFT's text tower is a pretrained causal LLM; with no downloads possible (tests, the built-in demo) its
tokenizer is trained on the fly here and wrapped as a `transformers.PreTrainedTokenizerFast`, so that it
saves with `save_pretrained` and reloads with `AutoTokenizer.from_pretrained` like a real LLM's tokenizer.

Families:
- ``"gpt2"``: byte-level BPE (as GPT-2/BioMedLM); one special token ``<|endoftext|>`` serving as bos, eos and
  unk; the post-processor adds no special tokens; pad token = eos.
- ``"llama"``: BPE with metaspace ("▁") word prefixes and byte fallback (as Llama-2/Meditron), special tokens
  ``<unk>`` (0), ``<s>`` (1), ``</s>`` (2), then the 256 byte tokens ``<0x00>``..``<0xFF>``; the post-processor
  prepends ``<s>``. Llama has no pad token; we add a dedicated ``<pad>`` (id 3) so padding can never be
  confused with a real end of sequence.

With ``append_eos=True`` the post-processor also appends the eos token to every sequence (useful when the
hidden state of the last token must summarise a whole report). Padding is on the right.
"""

from __future__ import annotations

from collections.abc import Iterable
import json
import logging

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

TOKENIZER_FAMILIES = ("gpt2", "llama")
GPT2_EOS = "<|endoftext|>"
LLAMA_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
LLAMA_BYTE_TOKENS = tuple(f"<0x{byte:02X}>" for byte in range(256))


def _check_family(family: str) -> None:
    if family not in TOKENIZER_FAMILIES:
        raise ValueError(f"family={family!r} is not supported; choose one of {TOKENIZER_FAMILIES}")


def _collect_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not a single string")
    collected = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if text.strip():
            collected.append(text)
    if not collected:
        raise ValueError("texts is empty (no non-blank string): cannot train a tokenizer")
    return collected


def _train_gpt2_backend(texts: list[str], vocab_size: int, append_eos: bool) -> Tokenizer:
    """Byte-level BPE: 256 byte symbols + ``<|endoftext|>`` + learned merges."""
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + 1
    if vocab_size <= minimum:
        raise ValueError(f"vocab_size={vocab_size} is too small for the gpt2 family (needs > {minimum})")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[GPT2_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    eos_id = backend.token_to_id(GPT2_EOS)
    if append_eos:
        backend.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"$A:0 {GPT2_EOS}:0",
                    pair=f"$A:0 {GPT2_EOS}:0 $B:1 {GPT2_EOS}:1",
                    special_tokens=[(GPT2_EOS, eos_id)],
                ),
            ]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def _train_llama_backend(texts: list[str], vocab_size: int, append_eos: bool) -> Tokenizer:
    """Metaspace BPE with byte fallback; vocab = specials, 256 byte tokens, then learned symbols/merges."""
    reserved = len(LLAMA_BYTE_TOKENS)
    minimum = len(LLAMA_SPECIALS) + reserved + len(set("".join(texts)))
    if vocab_size <= minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for the llama family on this corpus (needs > {minimum}: "
            f"{len(LLAMA_SPECIALS)} specials + 256 byte tokens + the corpus' characters)"
        )
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = metaspace
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - reserved, special_tokens=list(LLAMA_SPECIALS), show_progress=False
    )
    trained.train_from_iterator(texts, trainer=trainer, length=len(texts))

    # Re-number: specials keep ids 0..3, byte tokens take 4..259, learned symbols follow in training order.
    spec = json.loads(trained.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    vocab = {token: index for index, token in enumerate(LLAMA_SPECIALS)}
    for token in LLAMA_BYTE_TOKENS:
        vocab[token] = len(vocab)
    for token, _ in learned:
        if token not in vocab:
            vocab[token] = len(vocab)
    merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in spec["model"]["merges"]
    ]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.add_special_tokens(list(LLAMA_SPECIALS))
    backend.pre_tokenizer = metaspace
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos_id, eos_id = vocab["<s>"], vocab["</s>"]
    single, pair = "<s>:0 $A:0", "<s>:0 $A:0 <s>:1 $B:1"
    if append_eos:
        single, pair = "<s>:0 $A:0 </s>:0", "<s>:0 $A:0 </s>:0 <s>:1 $B:1 </s>:1"
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[("<s>", bos_id), ("</s>", eos_id)]
    )
    return backend


def train_tokenizer(
    texts: Iterable[str],
    *,
    family: str = "gpt2",
    vocab_size: int = 512,
    model_max_length: int = 128,
    append_eos: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer of the given family on ``texts`` (see module docstring for the conventions).

    Returns a right-padding `PreTrainedTokenizerFast` with bos/eos/unk/pad tokens set; its vocabulary may be
    smaller than ``vocab_size`` when the corpus has few distinct merges (``len(tokenizer)`` is the truth).
    """
    _check_family(family)
    if model_max_length < 2:
        raise ValueError(f"model_max_length={model_max_length} must be at least 2")
    corpus = _collect_texts(texts)
    if family == "gpt2":
        backend = _train_gpt2_backend(corpus, vocab_size, append_eos)
        special = {"bos_token": GPT2_EOS, "eos_token": GPT2_EOS, "unk_token": GPT2_EOS, "pad_token": GPT2_EOS}
    else:
        backend = _train_llama_backend(corpus, vocab_size, append_eos)
        special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
        clean_up_tokenization_spaces=False,
        **special,
    )
    logger.info("trained a %s tokenizer: %d tokens from %d texts", family, len(tokenizer), len(corpus))
    return tokenizer
