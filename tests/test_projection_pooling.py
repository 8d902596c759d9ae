"""Projection heads (`projection_head`, `projection_bias`) and text pooling (`text_pooling`) of CLEFTModel."""

from __future__ import annotations

import pytest
from tiny_models import tiny_cleft_config
import torch
import torch.nn.functional as F

from cleft_hf import CLEFTModel


def test_default_projections_are_bias_free_linear(model):
    keys = [k for k in model.state_dict() if "projection" in k]
    assert sorted(keys) == ["text_projection.weight", "visual_projection.weight"]


def test_mlp_head_has_the_reference_layout_and_survives_saving(make_model, batch, tmp_path):
    model = make_model(projection_head="mlp").eval()
    keys = {k.split(".", 1)[1] for k in model.state_dict() if k.startswith("visual_projection.")}
    assert keys == {
        "head.0.weight",
        "head.0.bias",
        "head.1.weight",
        "head.1.bias",
        "head.1.running_mean",
        "head.1.running_var",
        "head.1.num_batches_tracked",
        "head.3.weight",
        "head.3.bias",
        "head.4.running_mean",
        "head.4.running_var",
        "head.4.num_batches_tracked",
    }
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BatchNorm matters
        for module in model.visual_projection.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    pooled = model.vision_forward(batch["pixel_values"]).pooler_output
    head = model.visual_projection.head
    hidden = F.relu(
        F.batch_norm(
            F.linear(pooled, head[0].weight, head[0].bias),
            head[1].running_mean,
            head[1].running_var,
            head[1].weight,
            head[1].bias,
            eps=head[1].eps,
        )
    )
    expected = F.batch_norm(
        F.linear(hidden, head[3].weight, head[3].bias), head[4].running_mean, head[4].running_var, eps=head[4].eps
    )
    torch.testing.assert_close(model.get_image_features(batch["pixel_values"]), expected)
    model.save_pretrained(tmp_path / "mlp")
    loaded = CLEFTModel.from_pretrained(tmp_path / "mlp").eval()
    assert loaded.config.projection_head == "mlp"
    torch.testing.assert_close(loaded.get_image_features(batch["pixel_values"]), expected)


def test_projection_bias(make_model, batch):
    model = make_model(projection_bias=True).eval()
    assert model.text_projection.bias is not None and model.visual_projection.bias is not None
    with torch.no_grad():
        model.text_projection.bias.fill_(0.5)
    pooled = model.text_forward(batch["attention_mask"], input_ids=batch["input_ids"]).pooler_output
    torch.testing.assert_close(
        model.get_text_features(batch["input_ids"], batch["attention_mask"]),
        pooled @ model.text_projection.weight.t() + 0.5,
    )


def test_first_pad_pooling_masks_the_pooled_eos_only(make_model, batch):
    last = make_model(text_pooling="last").eval()
    first_pad = make_model(text_pooling="first_pad").eval()
    first_pad.load_state_dict(last.state_dict())
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(dim=1)
    run_mask = mask.clone()
    run_mask[torch.arange(len(ids)), lengths - 1] = 0  # the pooled EOS does not attend to itself
    positions = torch.arange(ids.shape[1]).expand_as(ids)  # right padding: positions 0..L-1
    with torch.no_grad():
        hidden = first_pad.text_model(input_ids=ids, attention_mask=run_mask, position_ids=positions).last_hidden_state
        pooled = first_pad.text_forward(mask, input_ids=ids).pooler_output
        pooled_last = last.text_forward(mask, input_ids=ids).pooler_output
    expected = hidden[torch.arange(len(ids)), lengths - 1]
    torch.testing.assert_close(pooled, expected)
    assert (pooled - pooled_last).abs().max() > 1e-4


def test_first_pad_needs_a_caption_token(make_model):
    model = make_model(text_pooling="first_pad")
    with pytest.raises(ValueError, match="needs a token before the pooled EOS"):
        model.get_text_features(torch.tensor([[3]]))


@pytest.mark.parametrize(
    "field, value", [("projection_head", "mlp2"), ("text_pooling", "eos"), ("projection_bias", "yes")]
)
def test_bad_fields_are_refused(family, tokenizer, field, value):
    with pytest.raises(ValueError, match=field):
        tiny_cleft_config(family, tokenizer, **{field: value})
