"""Worker for tests/test_training_ddp.py: one CLEFT stage-1 step under `accelerate launch` (2 processes, gloo).

`python -m accelerate.commands.launch --multi_gpu --num_processes 2 ... tests/ddp_train_worker.py ARGS.json OUT`
Each rank builds the model and the sharded DataLoader exactly as `run_pretraining` does, runs the first
micro-batch through the DDP-wrapped model and the gathered contrastive loss, and writes its loss, texts and
(DDP-averaged) gradients to OUT/rank<r>.pt. The test runs `first_step` in one process on the whole batch.
"""

from __future__ import annotations

import json
import sys

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
import torch


def first_step(args, accelerator: Accelerator) -> dict:
    """Loss, texts and gradients of the first training micro-batch, as `run_pretraining` computes them."""
    from cleft_hf.data import caption_ids, get_dataset_spec, get_split, make_loader
    from cleft_hf.training.contrastive_pretraining import build_model, build_processor, contrastive_loss_fn

    set_seed(args.seed)
    processor = build_processor(args)
    model = build_model(args)
    dataset = get_split(get_dataset_spec(args.dataset).load(args.data_root), args.train_split)
    loader = make_loader(
        dataset,
        processor,
        shuffle=True,
        batch_size=args.per_device_batch_size,
        num_workers=0,
        seed=args.seed,
        max_length=args.max_text_length,
        augment=None,
    )
    model, loader = accelerator.prepare(model, loader)
    loader.set_epoch(0)
    batch = next(iter(loader))
    outputs = model(
        pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    )
    loss = contrastive_loss_fn(args, accelerator.unwrap_model(model), outputs, caption_ids(batch["text"]))
    accelerator.backward(loss)
    grads = {
        name: p.grad.detach().clone()
        for name, p in accelerator.unwrap_model(model).named_parameters()
        if p.grad is not None
    }
    return {"loss": accelerator.reduce(loss.detach(), reduction="mean"), "texts": batch["text"], "grads": grads}


if __name__ == "__main__":
    from cleft_hf.training.config import PretrainArguments

    overrides, out_dir = json.loads(open(sys.argv[1]).read()), sys.argv[2]
    arguments = PretrainArguments(**overrides)
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    result = first_step(arguments, accelerator)
    result["world_size"] = accelerator.num_processes
    torch.save(result, f"{out_dir}/rank{accelerator.process_index}.pt")
