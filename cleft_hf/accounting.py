"""Parameter accounting of the paper's configurations, built on the meta device (no download, no memory).

`python -m cleft_hf.accounting` prints a markdown table (total, trainable and trainable-LM parameters) for
CLEFT (DINOv2 ViT-B/14-reg + BioMedLM 2.7 B with LoRA + projections) and for CLIP baselines that fully train
Bio_ClinicalBERT with the same ViT, then the two headline figures of the paper against the reference code's
6-layer Bio_ClinicalBERT baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cli import run_cli
from .arguments import ConfigError, arg

if TYPE_CHECKING:
    from .modeling import CLEFTConfig

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
    import torch

    from .modeling import CLEFTConfig, CLEFTModel

    config = config or CLEFTConfig()
    with torch.device("meta"):
        model = CLEFTModel(config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_lm = sum(p.numel() for p in model.text_model.parameters() if p.requires_grad)
    name = f"CLEFT ({config.vision_model_name.split('.')[0]} + {config.text_config.n_layer}-layer LLM + LoRA r={config.peft_config.get('r')})"
    return ParameterCount(name, total, trainable, trainable_lm)


def count_bert_clip(bert_layers: int, vision_config: CLEFTConfig | None = None) -> ParameterCount:
    """A CLIP with the same ViT and a fully trained Bio_ClinicalBERT of `bert_layers` layers (+ linear
    projections and a logit scale)."""
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel

    from .modeling import CLEFTConfig
    from .modeling.modeling_cleft import build_vision_tower

    config = vision_config or CLEFTConfig()
    with torch.device("meta"):
        model = nn.Module()
        model.vision_model = build_vision_tower(config)
        model.text_model = BertModel(BertConfig(num_hidden_layers=bert_layers, **BIO_CLINICAL_BERT))
        model.visual_projection = nn.Linear(model.vision_model.num_features, config.projection_dim, bias=False)
        model.text_projection = nn.Linear(BIO_CLINICAL_BERT["hidden_size"], config.projection_dim, bias=False)
        model.logit_scale = nn.Parameter(torch.zeros(()))
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


@dataclass
class AccountingArguments:
    """Parameter accounting of the paper's configurations (meta device, no download)."""

    baseline_bert_layers: int = arg(6, "Layers of the BERT baseline behind the two headline lines (reference code: 6).")

    def __post_init__(self) -> None:
        if not 1 <= self.baseline_bert_layers <= 12:
            raise ConfigError(f"--baseline_bert_layers must be in [1, 12] (Bio_ClinicalBERT), got {self.baseline_bert_layers}")


def report(args: AccountingArguments) -> None:
    """Print the table, one line per baseline, then the two headline `name=value` lines."""
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


def main(argv: list[str] | None = None) -> None:
    """`python -m cleft_hf.accounting [--baseline_bert_layers N]` (also the `cleft-accounting` command)."""
    run_cli(report, AccountingArguments, argv=argv, config_file=False)


if __name__ == "__main__":
    main()
