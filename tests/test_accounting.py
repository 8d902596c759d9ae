"""Parameter accounting on the meta device: the paper's configurations without any download."""

from __future__ import annotations

import re

from cleft_hf.accounting import count_bert_clip, count_cleft, main


def test_counts_follow_from_configs():
    cleft = count_cleft()
    assert cleft.trainable_lm == 32 * 8 * (2560 + 7680)  # LoRA on BioMedLM's fused c_attn, r = 8
    assert 2.6e9 < cleft.total < 2.8e9 and 85e6 < cleft.trainable < 95e6
    bert6 = count_bert_clip(6)  # Bio_ClinicalBERT's first 6 layers without pooler: embeddings + 6 x 7.09 M
    assert bert6.trainable_lm == 28996 * 768 + 512 * 768 + 2 * 768 + 2 * 768 + 6 * 7_087_872
    assert bert6.total - bert6.trainable == 1  # only the logit bias waits (prompt sets are made in stage 2)


def test_cli_prints_table_then_the_two_lines(capsys):
    main([])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | total | trainable | trainable LM |")
    assert re.fullmatch(r"total_trainable_reduction_pct=\d+\.\d+", lines[-2])
    assert re.fullmatch(r"lm_trainable_pct_of_bert=\d+\.\d+", lines[-1])
    reduction = float(lines[-2].split("=")[1])
    lm_pct = float(lines[-1].split("=")[1])
    assert 38 < reduction < 44 and 3.5 < lm_pct < 4.5  # paper: 39 and 4 (see README for the difference)
