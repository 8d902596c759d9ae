"""CLEFT processor: image processor + causal-LM tokenizer (right padding, EOS appended, truncation)."""

from __future__ import annotations

from typing import Any

from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import BatchEncoding

DEFAULT_MAX_LENGTH = 256
# How transformers loaded the tokenizer, kept in its init_kwargs: saved, they would force offline loading.
LOADING_FLAGS = ("local_files_only", "is_local")


def ensure_eos_appended(tokenizer: Any) -> Any:
    """Make `tokenizer` append EOS to every text (so the last token has seen the whole report), pad on the
    right and have a pad token. Kept in the tokenizer's post-processor, so it survives save/load and also
    holds for code that calls the tokenizer directly (e.g. transformers' zero-shot pipeline)."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; set tokenizer.eos_token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    ids = tokenizer("a")["input_ids"]
    if ids and ids[-1] == tokenizer.eos_token_id:
        return tokenizer
    if not hasattr(tokenizer, "update_post_processor"):
        raise TypeError(f"{type(tokenizer).__name__} cannot be set to append EOS: use a fast (tokenizers) tokenizer")
    adds_bos = tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id
    object.__setattr__(tokenizer, "_add_bos_token", adds_bos)
    tokenizer.add_eos_token = True
    return tokenizer


def is_encoder_tokenizer(tokenizer: Any) -> bool:
    """A BERT-style tokenizer: it starts every text with its [CLS] token (and ends it with [SEP])."""
    cls_id = getattr(tokenizer, "cls_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return cls_id is not None and bool(ids) and ids[0] == cls_id and tokenizer.eos_token_id is None


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A causal LM's tokenizer appends EOS (`ensure_eos_appended`); an encoder's keeps its [CLS] ... [SEP] and
    pads on the right."""
    if not is_encoder_tokenizer(tokenizer):
        return ensure_eos_appended(tokenizer)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"encoder tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token")
    tokenizer.padding_side = "right"
    names = ["input_ids", "attention_mask"]  # no token_type_ids: one segment (kept on save)
    tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = names
    return tokenizer


class CLEFTProcessor(ProcessorMixin):
    r"""Wraps a [`CLEFTImageProcessor`] and a causal-LM tokenizer (or an encoder's: BERT, RoBERTa).

    `processor(text=..., images=...)` returns `input_ids`, `attention_mask` (right padded, EOS last or the
    encoder's [CLS] ... [SEP], truncated to `max_length`) and `pixel_values` `(batch, 3, H, W)`.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = DEFAULT_MAX_LENGTH, **kwargs: Any):
        if tokenizer is not None:
            prepare_tokenizer(tokenizer)
            for flag in LOADING_FLAGS:
                tokenizer.init_kwargs.pop(flag, None)
        self.max_length = int(max_length)
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        if text is None and images is None:
            raise ValueError("give text, images or both")
        encoding = BatchEncoding()
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not texts:
                raise ValueError("text is an empty list")
            empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
            if empty:
                raise ValueError(f"empty text at position(s) {empty}")
            encoding.update(
                self.tokenizer(
                    texts,
                    padding=padding,
                    truncation=truncation,
                    max_length=max_length or self.max_length,
                    return_tensors=return_tensors,
                    **kwargs,
                )
            )
        if images is not None:
            encoding.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchEncoding(encoding.data, tensor_type=return_tensors)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["CLEFTProcessor", "ensure_eos_appended", "is_encoder_tokenizer", "prepare_tokenizer"]
