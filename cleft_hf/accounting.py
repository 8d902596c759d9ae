"""Parameter accounting of the paper's configurations, built on the meta device (no download, no memory).

`python -m cleft_hf.accounting` prints a markdown table (total, trainable and trainable-LM parameters) for
CLEFT (DINOv2 ViT-B/14-reg + BioMedLM 2.7 B with LoRA + projections) and for CLIP baselines that fully train
Bio_ClinicalBERT with the same ViT, then the two headline figures of the paper against the reference code's
6-layer Bio_ClinicalBERT baseline.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BertConfig, BertModel

from .modeling import CLEFTConfig, CLEFTModel
from .modeling.modeling_cleft import build_vision_tower

# emilyalsentzer/Bio_ClinicalBERT: BERT-base geometry with a 28 996-token vocabulary.
BIO_CLINICAL_BERT = {"vocab_size": 28996, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
                     "max_position_embeddings": 512}


@dataclass
class ParameterCount:
    """Parameter counts of one configuration."""

    name: str
    total: int
    trainable: int
    trainable_lm: int


def count_cleft(config: CLEFTConfig | None = None) -> ParameterCount:
    """CLEFT in stage 1: vision tower, LoRA, projections and logit scale trainable; base LLM frozen."""
    config = config or CLEFTConfig()
    with torch.device("meta"):
        model = CLEFTModel(config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_lm = sum(p.numel() for p in model.text_model.parameters() if p.requires_grad)
    name = f"CLEFT ({config.vision_model_name.split('.')[0]} + {config.text_config.n_layer}-layer LLM + LoRA r={config.peft_config.get('r')})"
    return ParameterCount(name, total, trainable, trainable_lm)


class _BertCLIP(nn.Module):
    """The BERT-encoder CLIP baseline: same vision tower, fully trained BERT, linear projections."""

    def __init__(self, vision_config: CLEFTConfig, bert_layers: int):
        super().__init__()
        self.vision_model = build_vision_tower(vision_config)
        self.text_model = BertModel(BertConfig(num_hidden_layers=bert_layers, **BIO_CLINICAL_BERT))
        self.visual_projection = nn.Linear(self.vision_model.num_features, vision_config.projection_dim, bias=False)
        self.text_projection = nn.Linear(BIO_CLINICAL_BERT["hidden_size"], vision_config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.zeros(()))


def count_bert_clip(bert_layers: int, vision_config: CLEFTConfig | None = None) -> ParameterCount:
    """A CLIP with the same ViT and a fully trained Bio_ClinicalBERT of `bert_layers` layers."""
    with torch.device("meta"):
        model = _BertCLIP(vision_config or CLEFTConfig(), bert_layers)
    total = sum(p.numel() for p in model.parameters())
    bert = sum(p.numel() for p in model.text_model.parameters())
    return ParameterCount(f"CLIP (same ViT + Bio_ClinicalBERT, {bert_layers} layers, fully trained)", total, total, bert)


def headline(cleft: ParameterCount, clip: ParameterCount) -> tuple[float, float]:
    """(percent fewer total trainable parameters, trainable LM as percent of the BERT encoder)."""
    return 100.0 * (1.0 - cleft.trainable / clip.trainable), 100.0 * cleft.trainable_lm / clip.trainable_lm


def markdown_table(rows: list[ParameterCount]) -> str:
    lines = ["| model | total | trainable | trainable LM |", "|---|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.total / 1e6:,.2f} M | {r.trainable / 1e6:,.2f} M | {r.trainable_lm / 1e6:,.2f} M |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline_bert_layers", type=int, default=6,
                        help="layers of the BERT baseline behind the two headline lines (reference code: 6)")
    args = parser.parse_args(argv)
    cleft = count_cleft()
    baselines = {layers: count_bert_clip(layers) for layers in sorted({6, 12, args.baseline_bert_layers})}
    print(markdown_table([cleft, *baselines.values()]))
    for layers, clip in baselines.items():
        reduction, lm_pct = headline(cleft, clip)
        print(f"\n- vs {layers}-layer BERT CLIP: {reduction:.1f} % fewer trainable parameters, "
              f"trainable LM = {lm_pct:.2f} % of BERT")
    reduction, lm_pct = headline(cleft, baselines[args.baseline_bert_layers])
    print(f"\ntotal_trainable_reduction_pct={reduction:.2f}")
    print(f"lm_trainable_pct_of_bert={lm_pct:.2f}")


if __name__ == "__main__":
    main()
