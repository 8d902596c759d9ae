"""Evaluation of CLEFT models: zero-shot (hand and learned prompts), linear probe, retrieval, plots, reports."""

from .embeddings import compute_image_embeddings, compute_text_embeddings
from .linear_probe import linear_probe
from .retrieval import retrieval_recall

__all__ = [
    "compute_image_embeddings", "compute_text_embeddings", "linear_probe", "retrieval_recall",
]
