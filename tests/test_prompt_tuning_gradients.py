"""Stage 2 trains exactly what its loss reads: every trainable parameter gets a gradient from the stage's own loss
(a trainable parameter without one stops DDP at the second step), for both losses, the vision tower frozen or
trained, on a model that already carries another prompt set (which stays frozen)."""

from __future__ import annotations

import pytest
import torch

from cleft_hf.training.config import PromptTuneArguments
from cleft_hf.training.prompt_tuning import prompt_loss

CLASSES = ["edema", "cardiomegaly", "atelectasis"]


@pytest.mark.parametrize("loss", ["clip", "bce"])
@pytest.mark.parametrize("freeze_vision", [True, False])
def test_every_trainable_stage2_parameter_gets_a_gradient(model, processor, batch, tmp_path, loss, freeze_vision):
    model.setup_prompt_learning(["negative", "benign"], processor, num_context_tokens=2, task="birads", init_text="")
    model.setup_prompt_learning(CLASSES, processor, num_context_tokens=3, task="findings", init_text="")
    model.configure_for_prompt_tuning(freeze_vision=freeze_vision, train_logit_bias=loss == "bce")
    args = PromptTuneArguments(data_root=str(tmp_path), model_name_or_path="stage1", loss=loss)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    inputs = (
        {
            "image_embeds": torch.nn.functional.normalize(
                model.get_image_features(batch["pixel_values"]), dim=-1
            ).detach()
        }
        if freeze_vision
        else {"pixel_values": batch["pixel_values"]}
    )
    prompt_loss(args, model, model, {**inputs, "labels": labels}, CLASSES, processor).backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in model.named_parameters() if p.grad is not None}
    assert "prompt_sets.findings.ctx" in trainable and "prompt_sets.birads.ctx" not in trainable  # the active set
    assert ("logit_bias" in trainable) == (loss == "bce")
    assert any(name.startswith("vision_model.") for name in trainable) != freeze_vision
