"""The analytic FLOP count of a training step (used for MFU in benchmarks/) equals torch's FlopCounterMode."""

from __future__ import annotations

import pytest
from tiny_models import tiny_cleft_config
import torch
from torch.utils.flop_counter import FlopCounterMode

from cleft_hf import CLEFTModel
from cleft_hf.flops import training_step_flops


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no_checkpointing"])
@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "c_fc"]], ids=["c_attn", "c_attn+c_fc"])
@pytest.mark.parametrize("resid_pdrop", [0.1, 0.0], ids=["dropout", "no_dropout"])
def test_analytic_step_flops_equal_flop_counter(tokenizer_dirs, checkpointing, targets, resid_pdrop):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dirs["gpt2"])
    config = tiny_cleft_config("gpt2", tokenizer, peft_config={"r": 4, "target_modules": targets})
    config.text_config.resid_pdrop = resid_pdrop
    torch.manual_seed(0)
    model = CLEFTModel(config).train()
    model.text_model.get_base_model().set_attn_implementation("eager")  # CPU sdpa is invisible to the counter
    for block in model.vision_model.blocks:
        block.attn.fused_attn = False
    if checkpointing:
        model.activation_checkpointing_enable()
    batch, length = 3, 12
    inputs = {
        "pixel_values": torch.randn(batch, 3, 32, 32),
        "input_ids": torch.randint(0, 300, (batch, length)),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }
    with FlopCounterMode(display=False) as counter:
        model(**inputs, return_loss=True).loss.backward()
    expected = training_step_flops(config, batch, length, gradient_checkpointing=checkpointing).total
    assert counter.get_total_flops() == expected
