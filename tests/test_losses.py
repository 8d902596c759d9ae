"""Tests of the losses (modeling/loss_cleft.py): formulas on one process, and 2-process CPU DDP equal to one process."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from cleft_hf.modeling.loss_cleft import clip_loss, multilabel_bce_prompt_loss, siglip_loss

WORKER = Path(__file__).with_name("ddp_loss_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_loss_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _embeds(batch=6, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    return images, texts


def _naive_clip(images, texts, scale, positives):
    """Loop-based symmetric InfoNCE with soft targets uniform over `positives` (B, B) bool."""
    total = 0.0
    batch = images.shape[0]
    for i in range(batch):
        row = scale * (texts @ images[i])  # image i against all texts
        column = scale * (images @ texts[i])  # text i against all images
        target = positives[i].double() / positives[i].sum()
        total += -(target * torch.log_softmax(row.double(), 0)).sum()
        total += -(target * torch.log_softmax(column.double(), 0)).sum()
    return total / (2 * batch)


def test_clip_loss_matches_loop_formula_and_cross_entropy():
    images, texts = _embeds()
    logit_scale = torch.tensor(math.log(1 / 0.07))
    loss = clip_loss(images, texts, logit_scale)
    expected = _naive_clip(images, texts, 1 / 0.07, torch.eye(6, dtype=torch.bool))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    logits = (1 / 0.07) * images @ texts.T
    labels = torch.arange(6)
    reference = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert clip_loss(images, texts, logit_scale, local_loss=False).item() == pytest.approx(loss.item(), rel=1e-6)


def test_clip_loss_perfect_alignment_is_small_and_shuffled_is_large():
    images, _ = _embeds(batch=8, dim=32)
    scale = torch.tensor(math.log(100.0))
    aligned = clip_loss(images, images.clone(), scale)
    shuffled = clip_loss(images, images.roll(1, dims=0), scale)
    assert aligned.item() < 0.5 < math.log(8) < shuffled.item()


def test_logit_scale_is_clamped_at_100():
    images, texts = _embeds()
    big = torch.tensor(math.log(500.0), requires_grad=True)
    loss = clip_loss(images, texts, big)
    assert loss.item() == pytest.approx(clip_loss(images, texts, torch.tensor(math.log(100.0))).item(), rel=1e-6)
    loss.backward()
    assert big.grad.item() == 0.0


def test_identical_captions_become_positives():
    images, texts = _embeds(batch=6)
    # Rows 0 and 3 share a caption, as do rows 1 and 5; their embeddings differ slightly (LoRA dropout). With
    # bit-identical embeddings the columns are indistinguishable and one-hot targets give the same gradient.
    noise = 0.05 * torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    texts = texts.clone()
    texts[3] = F.normalize(texts[0] + noise[0], dim=-1)
    texts[5] = F.normalize(texts[1] + noise[1], dim=-1)
    text_ids = torch.tensor([10, 11, 12, 10, 13, 11])
    scale = torch.tensor(2.5)
    positives = text_ids.unsqueeze(0) == text_ids.unsqueeze(1)
    loss = clip_loss(images, texts, scale, text_ids=text_ids)
    assert loss.item() == pytest.approx(_naive_clip(images, texts, math.exp(2.5), positives).item(), rel=1e-5)
    plain = clip_loss(images, texts, scale)
    assert abs(loss.item() - plain.item()) > 1e-3
    unique = clip_loss(images, texts, scale, text_ids=torch.arange(6))
    assert unique.item() == pytest.approx(plain.item(), rel=1e-6)
    full = clip_loss(images, texts, scale, text_ids=text_ids, local_loss=False)
    assert full.item() == pytest.approx(loss.item(), rel=1e-6)


def test_siglip_loss_matches_pairwise_formula():
    images, texts = _embeds(batch=5)
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    loss = siglip_loss(images, texts, scale, bias)
    total = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            total += -math.log(1 / (1 + math.exp(-z * (10.0 * float(images[i] @ texts[j]) - 10.0))))
    assert loss.item() == pytest.approx(total / 5, rel=1e-5)
    ids = torch.tensor([0, 1, 0, 2, 3])
    with_ids = siglip_loss(images, texts, scale, bias, text_ids=ids)
    extra = sum(
        math.log(1 / (1 + math.exp(-(10.0 * float(images[i] @ texts[j]) - 10.0))))
        - math.log(1 / (1 + math.exp(10.0 * float(images[i] @ texts[j]) - 10.0)))
        for i, j in ((0, 2), (2, 0))
    )
    assert with_ids.item() == pytest.approx((total - extra) / 5, rel=1e-5)


def test_multilabel_bce_prompt_loss_and_mask():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    expected = F.binary_cross_entropy_with_logits(logits, labels.float())
    assert multilabel_bce_prompt_loss(logits, labels).item() == pytest.approx(expected.item())
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    kept = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")[mask.bool()].mean()
    assert multilabel_bce_prompt_loss(logits, labels, mask).item() == pytest.approx(kept.item())
    with pytest.raises(ValueError, match="multi_hot_labels"):
        multilabel_bce_prompt_loss(logits, labels[:, :2])
    with pytest.raises(ValueError, match="label_mask"):
        multilabel_bce_prompt_loss(logits, labels - 1)


def test_bad_shapes_are_rejected():
    images, texts = _embeds()
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(images, texts[:4], torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        clip_loss(images[0], texts[0], torch.tensor(1.0))
    with pytest.raises(ValueError, match="text_ids"):
        clip_loss(images, texts, torch.tensor(1.0), text_ids=torch.arange(3))


def _accelerate_command(inputs: Path, out_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(WORKER), str(inputs), str(out_dir),
    ]  # fmt: skip


def test_two_process_ddp_equals_single_process_on_concatenated_batch(tmp_path):
    worker = _load_worker()
    torch.manual_seed(0)
    model = worker.TinyTowers()
    inputs = {
        "state_dict": model.state_dict(),
        "images": torch.randn(8, 6),
        "texts": torch.randn(8, 5),
        "text_ids": torch.tensor([0, 1, 0, 2, 3, 1, 4, 0]),
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    command = _accelerate_command(tmp_path / "inputs.pt", tmp_path)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    for rank in ranks:  # NaN on rank 1 only: both ranks stop at step 2 after saving the state once
        assert rank["non_finite"]["raised_at"] == 2
        assert (Path(rank["non_finite"]["state_dir"]) / "trainer_state.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step_1" / "random_states_1.pkl").is_file()
    for name, kind, local_loss, split, use_ids in worker.SCENARIOS:
        single = worker.TinyTowers()
        single.load_state_dict(inputs["state_dict"])
        text_ids = inputs["text_ids"] if use_ids else None
        loss = worker.scenario_loss(single, kind, local_loss, inputs["images"], inputs["texts"], text_ids)
        loss.backward()
        for rank in ranks:
            assert rank[name]["loss"].item() == pytest.approx(loss.item(), abs=1e-5), name
            for key, param in single.named_parameters():
                torch.testing.assert_close(
                    rank[name]["grads"][key], param.grad, atol=1e-5, rtol=0, msg=f"{name} {key}"
                )
        # Without the gather each rank only sees its own negatives: a different (smaller-batch) loss.
        halves = [slice(0, split), slice(split, None)]
        local_only = [
            worker.scenario_loss(single, kind, local_loss, inputs["images"][rows], inputs["texts"][rows],
                                 text_ids[rows] if use_ids else None, gather=False).item()
            for rows in halves
        ]  # fmt: skip
        assert abs(sum(local_only) / 2 - loss.item()) > 1e-3, name
