"""Convert the authors' CLEFT checkpoints (PyTorch-Lightning `.ckpt` of the reference code) to cleft-hf folders.

    python -m cleft_hf.convert_original_checkpoint --checkpoint FILE.ckpt --output_dir DIR \
        [--text_model_name_or_path stanford-crfm/BioMedLM] [--dataset chexpert] [--class_names ...] [--dtype ...]

Stage 1 or 2 is read from the keys, the towers' sizes from the tensors; the base LLM's config and tokenizer come
from `--text_model_name_or_path` (all weights from the checkpoint). The converted model is in the reference-
compatible mode (`reference_config`): it computes the reference's features from raw strings and images through
its own processor. Stage 2's context becomes the learned prompt set of the dataset's task.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path
from typing import Any

import torch

from .arguments import arg
from .conversion.reference_layout import (
    REFERENCE_LORA_ALPHA,
    REFERENCE_LORA_DROPOUT,
    ConversionError,
    ReferenceLayout,
    inspect_reference_state_dict,
    load_reference_checkpoint,
    map_reference_state_dict,
)

REFERENCE_CODE = "XYPB/CLEFT"
REFERENCE_MAX_LENGTH = 64
REFERENCE_CONTEXT_INIT = "this is a chest x ray of a patient with"
REFERENCE_VISION_MODEL = "vit_base_patch14_reg4_dinov2"
REFERENCE_IMAGE_SIZE = 224
DINOV2_B14_REG_HUB_ID = "timm/vit_base_patch14_reg4_dinov2.lvd142m"  # the weights the authors' ViT started from
SUMMARY_HYPER_PARAMETERS = (
    "llm_type",
    "img_encoder",
    "emb_dim",
    "linear_proj",
    "peft",
    "ctx_length",
    "prompt_ft",
    "learning_rate",
    "batch_size",
    "max_epochs",
    "max_steps",
    "dataset",
    "precision",
)


def reference_config(layout: ReferenceLayout, text_config: Any, text_model_name_or_path: str) -> Any:
    """The `CLEFTConfig` of a converted model: sizes from the checkpoint, the reference's conventions switched on
    (pooled EOS not attending to itself, projection bias or MLP head, unclamped logit scale)."""
    from .modeling import CLEFTConfig

    return CLEFTConfig(
        vision_model_name=REFERENCE_VISION_MODEL,
        vision_model_kwargs=layout.vision_kwargs,
        image_size=REFERENCE_IMAGE_SIZE,
        image_pooling="mean",
        text_config=text_config.to_dict(),
        text_model_name_or_path=str(text_model_name_or_path),
        peft_config={
            "peft_type": "LORA",
            "r": layout.lora_rank,
            "lora_alpha": REFERENCE_LORA_ALPHA,
            "lora_dropout": REFERENCE_LORA_DROPOUT,
            "target_modules": layout.lora_targets,
        },
        projection_dim=layout.projection_dim,
        projection_head=layout.projection_head,
        projection_bias=layout.projection_head == "linear",
        text_pooling="first_pad",
        logit_scale_max=None,
        prompt_num_context_tokens=layout.num_context_tokens or 30,
        prompt_init_text=REFERENCE_CONTEXT_INIT,
        modality="chest-x-ray",
        save_base_model=True,
        vision_pretrained_source=DINOV2_B14_REG_HUB_ID if layout.vision_kwargs["embed_dim"] == 768 else None,
    )


def reference_processor(tokenizer: Any) -> Any:
    """The processor of a converted model: the LLM's tokenizer (EOS appended, right padding, 64 tokens) and the
    reference's evaluation image preprocessing."""
    from .modeling import CLEFTImageProcessor, CLEFTProcessor

    image_processor = CLEFTImageProcessor(
        size=REFERENCE_IMAGE_SIZE, crop_size=REFERENCE_IMAGE_SIZE, preprocessing="reference"
    )
    return CLEFTProcessor(image_processor, tokenizer, max_length=REFERENCE_MAX_LENGTH)


def _check_text_tower(layout: ReferenceLayout, text_config: Any, tokenizer: Any, source: str) -> None:
    expected = layout.text_sizes
    if text_config.model_type != "gpt2":
        raise ConversionError(
            f"--text_model_name_or_path {source} is a {text_config.model_type} model; the "
            "reference's checkpoints hold a GPT-2-family LLM (BioMedLM)"
        )
    found = {name: getattr(text_config, name) for name in expected}
    if found != expected:
        raise ConversionError(
            f"--text_model_name_or_path {source} has sizes {found} but the checkpoint's LLM has "
            f"{expected}: give the LLM the checkpoint was trained with"
        )
    if len(tokenizer) != expected["vocab_size"]:
        raise ConversionError(
            f"the tokenizer of {source} has {len(tokenizer)} tokens but the checkpoint's "
            f"embedding has {expected['vocab_size']} rows: give the LLM the checkpoint was trained "
            "with"
        )


def _prompt_classes(dataset: str | None, class_names: list[str] | None) -> tuple[list[str], str]:
    """Stage-2 class names (lower case, as the reference writes them) and the task their prompt set is for."""
    from .data.registry import dataset_names, get_dataset_spec

    if class_names:
        task = get_dataset_spec(dataset).task_name() if dataset in dataset_names() else (dataset or "findings")
        return [name.lower() for name in class_names], task
    if dataset not in dataset_names():
        raise ConversionError(
            f"a stage-2 checkpoint needs its class names: dataset {dataset!r} is not one cleft-hf "
            "knows, so pass --class_names in the order they were trained"
        )
    spec = get_dataset_spec(dataset)
    task = spec.task_name()
    return [name.lower() for name in spec.task(task).class_names], task


def prompt_learner_keys(model: Any) -> set[str]:
    """State-dict keys of the model's learned-prompt modules (what a reference checkpoint does not fill)."""
    from .modeling.prompt_learning_cleft import CLEFTPromptLearner

    return {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if isinstance(module, CLEFTPromptLearner)
        for key in module.state_dict()
    }


def _materialise_prompt_learners(model: Any) -> None:
    """Modules the checkpoint does not fill (the stage-1 model's empty prompt context) get real, initialised
    tensors; anything else left on the meta device is a conversion bug."""
    from .modeling.prompt_learning_cleft import CLEFTPromptLearner

    for module in model.modules():
        if isinstance(module, CLEFTPromptLearner) and module.ctx.is_meta:
            module.to_empty(device="cpu")
            module.reset_parameters()
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"conversion left tensors without values: {left[:5]}")


def is_embed_trained(hyper_parameters: dict[str, Any], dataset: str | None) -> bool:
    """Whether the run that wrote the checkpoint used EMBED (mammography) data, by its arguments or `dataset`."""
    texts = [str(dataset or "")] + [str(v) for v in (hyper_parameters or {}).values() if isinstance(v, str)]
    return any("embed" in text.lower() for text in texts)


def convert_original_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    text_model_name_or_path: str = "stanford-crfm/BioMedLM",
    dataset: str | None = "chexpert",
    class_names: list[str] | None = None,
    dtype: str | None = None,
    adapter_only: bool = False,
) -> Path:
    """Convert one reference checkpoint into the cleft-hf folder `output_dir` (model, processor, model card).

    `dtype` is the saved base LLM's (default: the checkpoint's, bf16 for the authors' files: lossless); the
    trainable parts are float32. `adapter_only` leaves the base LLM out (it then loads from
    `text_model_name_or_path`, whose weights may differ from the checkpoint's bf16 copy)."""
    from transformers import AutoConfig, AutoTokenizer

    from .hub.model_card import render_model_card
    from .modeling import CLEFTModel
    from .modeling.loading_cleft import resolve_llm_dtype

    checkpoint = Path(checkpoint)
    loaded = load_reference_checkpoint(checkpoint)
    hyper_parameters = loaded.get("hyper_parameters") or {}
    if hyper_parameters.get("llm_type", "gpt") != "gpt":
        raise ConversionError(
            f"checkpoint's llm_type is {hyper_parameters['llm_type']!r}: only 'gpt' (BioMedLM) "
            "checkpoints are supported"
        )
    state_dict = loaded["state_dict"]
    layout = inspect_reference_state_dict(state_dict)
    names, task = _prompt_classes(dataset, class_names) if layout.stage == 2 else (None, None)
    text_config = AutoConfig.from_pretrained(text_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path)
    _check_text_tower(layout, text_config, tokenizer, text_model_name_or_path)
    config = reference_config(layout, text_config, text_model_name_or_path)
    with torch.device("meta"):
        model = CLEFTModel(config)
    mapped, context = map_reference_state_dict(state_dict, layout, model)
    base_dtype = layout.dtype if dtype in (None, "auto") else resolve_llm_dtype(dtype)
    base_keys = set(model.base_llm_state_keys())
    mapped = {k: v.to(base_dtype if k in base_keys else torch.float32).contiguous() for k, v in mapped.items()}
    missing, _ = model.load_state_dict(mapped, strict=False, assign=True)
    unfilled = sorted(set(missing) - prompt_learner_keys(model))
    _materialise_prompt_learners(model)
    if unfilled:
        raise RuntimeError(f"conversion did not fill {unfilled[:5]}")
    processor = reference_processor(tokenizer)
    if layout.stage == 2:
        model.setup_prompt_learning(
            names,
            processor,
            num_context_tokens=layout.num_context_tokens,
            class_specific=False,
            init_text=REFERENCE_CONTEXT_INIT,
            task=task,
        )
        with torch.no_grad():
            model.prompt_set(task)[0].ctx.copy_(context.float())
    model.config.source_checkpoint = checkpoint.name
    model.eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, save_base_model=not adapter_only)
    processor.save_pretrained(output_dir)
    summary = {
        "stage": f"converted from the authors' checkpoint {checkpoint.name} (reference stage {layout.stage})",
        "reference_code": REFERENCE_CODE,
        **{k: hyper_parameters[k] for k in SUMMARY_HYPER_PARAMETERS if k in hyper_parameters},
    }
    card = render_model_card(model, training_summary=[summary], save_base_model=not adapter_only)
    card.save(output_dir / "README.md")
    (output_dir / "conversion.json").write_text(
        json.dumps(
            {
                "checkpoint": checkpoint.name,
                "stage": layout.stage,
                "epoch": loaded.get("epoch"),
                "global_step": loaded.get("global_step"),
                "stored_dtype": str(layout.dtype).replace("torch.", ""),
                "task": task,
                "class_names": names,
                "hyper_parameters": {
                    k: v for k, v in hyper_parameters.items() if isinstance(v, (str, int, float, bool))
                },
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return output_dir


@dataclass
class ConvertArguments:
    """Arguments of `python -m cleft_hf.convert_original_checkpoint`."""

    checkpoint: str | None = arg(None, "The authors' .ckpt file (stage 1 'Contrastive Pre-train' or stage 2).")
    output_dir: str | None = arg(None, "Folder of the converted cleft-hf model.")
    text_model_name_or_path: str = arg("stanford-crfm/BioMedLM", "Base LLM (Hub id or folder): config, tokenizer.")
    dataset: str | None = arg("chexpert", "Dataset of stage 2 (its classes name the learned prompts).")
    class_names: list[str] | None = arg(None, "Stage-2 class names in training order (default: the dataset's).")
    dtype: str | None = arg(None, "Saved base LLM dtype (default: the checkpoint's; bfloat16, float32).")
    adapter_only: bool = arg(False, "Save without the base LLM (it then loads from text_model_name_or_path).")
    push_to_hub: bool = arg(False, "Upload the converted folder to the Hub model repository hub_model_id.")
    hub_model_id: str | None = arg(None, "Hub repository (you/name) for push_to_hub.")
    embed_license_allows_sharing: bool = arg(
        False, "Needed to push a conversion of an EMBED-trained checkpoint: you confirm the EMBED licence allows it."
    )

    def __post_init__(self) -> None:
        if not self.checkpoint or not self.output_dir:
            raise ConversionError("--checkpoint FILE.ckpt and --output_dir DIR are required")
        if self.push_to_hub and not self.hub_model_id:
            raise ConversionError("--push_to_hub needs --hub_model_id you/name")


def main(args: ConvertArguments) -> Path:
    if args.push_to_hub and not args.embed_license_allows_sharing:
        hyper_parameters = load_reference_checkpoint(args.checkpoint).get("hyper_parameters") or {}
        if is_embed_trained(hyper_parameters, args.dataset):
            raise ConversionError(
                "this checkpoint was trained on EMBED, whose licence may not allow sharing model "
                "weights (the authors paused theirs): pass --embed_license_allows_sharing only if "
                "yours does"
            )
    if args.push_to_hub:
        from .cli import check_hub_token

        check_hub_token(args.hub_model_id)
    folder = convert_original_checkpoint(
        args.checkpoint,
        args.output_dir,
        text_model_name_or_path=args.text_model_name_or_path,
        dataset=args.dataset,
        class_names=args.class_names,
        dtype=args.dtype,
        adapter_only=args.adapter_only,
    )
    print(f"converted {args.checkpoint} -> {folder}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.hub_model_id, exist_ok=True, repo_type="model")
        message = f"Convert the authors' CLEFT checkpoint {Path(args.checkpoint).name}"
        commit = api.upload_folder(
            repo_id=args.hub_model_id, folder_path=folder, repo_type="model", commit_message=message
        )
        print(f"uploaded {args.hub_model_id}: {getattr(commit, 'commit_url', commit)}")
    return folder


if __name__ == "__main__":
    from .cli import run_cli

    run_cli(main, ConvertArguments, config_file=False)
