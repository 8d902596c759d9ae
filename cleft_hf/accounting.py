"""Parameter accounting of the paper's configurations, built on the meta device (no download, no memory).

`python -m cleft_hf.accounting` prints a markdown table (total, trainable and trainable-LM parameters) for
CLEFT (DINOv2 ViT-B/14-reg + BioMedLM 2.7 B with LoRA + projections) and for CLIP baselines that fully train
Bio_ClinicalBERT with the same ViT (the same `CLEFTModel` class and config, on the meta device), then the two
headline figures of the paper against the reference code's 6-layer Bio_ClinicalBERT baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .arguments import ConfigError, arg
from .cli import run_cli

if TYPE_CHECKING:
    from .modeling import CLEFTConfig

# emilyalsentzer/Bio_ClinicalBERT: BERT-base geometry with a 28 996-token vocabulary.
BIO_CLINICAL_BERT_ID = "emilyalsentzer/Bio_ClinicalBERT"
BIO_CLINICAL_BERT = {
    "vocab_size": 28996,
    "hidden_size": 768,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}


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


def bert_clip_config(bert_layers: int = 6, vision_config: CLEFTConfig | None = None) -> CLEFTConfig:
    """The reference code's CLIP baseline as a CLEFTConfig: the vision tower of `vision_config` (default the
    paper's), Bio_ClinicalBERT cut to its first `bert_layers` layers and trained whole ([CLS] pooling, no pooler),
    MLP projection heads (768 -> 2048 -> BatchNorm -> ReLU -> 512 -> BatchNorm), as
    `examples/configs/*_bert_clip.yaml`."""
    from .modeling import CLEFTConfig

    base = vision_config or CLEFTConfig()
    return CLEFTConfig(
        vision_model_name=base.vision_model_name,
        vision_model_kwargs=base.vision_model_kwargs,
        image_size=base.image_size,
        image_pooling=base.image_pooling,
        projection_dim=base.projection_dim,
        text_config={"model_type": "bert", "num_hidden_layers": 12, **BIO_CLINICAL_BERT},
        text_model_name_or_path=BIO_CLINICAL_BERT_ID,
        text_num_layers=bert_layers,
        peft_config={"peft_type": "NONE"},
        text_pooling="cls",
        projection_head="mlp",
    )


def count_bert_clip(bert_layers: int, vision_config: CLEFTConfig | None = None) -> ParameterCount:
    """The BERT CLIP baseline (`bert_clip_config`) built as a `CLEFTModel` on the meta device, in stage 1:
    everything trains but the (unused) prompt context and logit bias."""
    import torch

    from .modeling import CLEFTModel

    with torch.device("meta"):
        model = CLEFTModel(bert_clip_config(bert_layers, vision_config))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bert = sum(p.numel() for p in model.text_model.parameters() if p.requires_grad)
    name = f"CLIP (same ViT + Bio_ClinicalBERT, {bert_layers} layers, fully trained, MLP heads)"
    return ParameterCount(name, total, trainable, bert)


def headline(cleft: ParameterCount, clip: ParameterCount) -> tuple[float, float]:
    """(percent fewer total trainable parameters, trainable LM as percent of the BERT encoder)."""
    return 100.0 * (1.0 - cleft.trainable / clip.trainable), 100.0 * cleft.trainable_lm / clip.trainable_lm


def markdown_table(rows: list[ParameterCount]) -> str:
    lines = ["| model | total | trainable | trainable LM |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r.name} | {r.total / 1e6:,.2f} M | {r.trainable / 1e6:,.2f} M | {r.trainable_lm / 1e6:,.2f} M |"
        for r in rows
    ]
    return "\n".join(lines)


@dataclass
class AccountingArguments:
    """Parameter accounting of the paper's configurations (meta device, no download)."""

    baseline_bert_layers: int = arg(
        6, "Layers of the BERT baseline behind the two headline lines (reference code: 6)."
    )

    def __post_init__(self) -> None:
        if not 1 <= self.baseline_bert_layers <= 12:
            raise ConfigError(
                f"--baseline_bert_layers must be in [1, 12] (Bio_ClinicalBERT), got {self.baseline_bert_layers}"
            )


def report(args: AccountingArguments) -> None:
    """Print the table, one line per baseline, then the two headline `name=value` lines."""
    cleft = count_cleft()
    baselines = {layers: count_bert_clip(layers) for layers in sorted({6, 12, args.baseline_bert_layers})}
    print(markdown_table([cleft, *baselines.values()]))
    for layers, clip in baselines.items():
        reduction, lm_pct = headline(cleft, clip)
        print(
            f"\n- vs {layers}-layer BERT CLIP: {reduction:.1f} % fewer trainable parameters, "
            f"trainable LM = {lm_pct:.2f} % of BERT"
        )
    reduction, lm_pct = headline(cleft, baselines[args.baseline_bert_layers])
    print(f"\ntotal_trainable_reduction_pct={reduction:.2f}")
    print(f"lm_trainable_pct_of_bert={lm_pct:.2f}")


def main(argv: list[str] | None = None) -> None:
    """`python -m cleft_hf.accounting [--baseline_bert_layers N]` (also the `cleft-accounting` command)."""
    run_cli(report, AccountingArguments, argv=argv, config_file=False)


if __name__ == "__main__":
    main()
