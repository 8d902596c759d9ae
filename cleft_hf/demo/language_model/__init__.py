"""Small causal LMs made on the fly (tokenizer training + causal-LM pretraining) for demos and tests."""

from .pretraining import PretrainResult, pretrain_causal_lm, tiny_causal_lm_config
from .tokenizer_training import TOKENIZER_FAMILIES, train_tokenizer

__all__ = ["TOKENIZER_FAMILIES", "PretrainResult", "pretrain_causal_lm", "tiny_causal_lm_config", "train_tokenizer"]
