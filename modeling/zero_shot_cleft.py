"""Zero-shot classification for CLEFT: class prompts (hand-written or learned) encoded once and reused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .prompt_sets_cleft import check_class_names, tokenizer_of


class CLEFTZeroShotMixin:
    """Methods of `CLEFTModel` for class prompts and zero-shot classification (needs `CLEFTFeaturesMixin` and
    `CLEFTPromptSetsMixin`: a model can carry several named sets of learned prompts, e.g. EMBED `density` and
    `birads`; `task=` picks one wherever learned prompts are used, None the active one).
    """

    # ----------------------------------------------------------------- class embeddings
    def encode_class_prompts(
        self,
        class_names: Sequence[str] | None = None,
        processor: Any = None,
        prompt_template: str | None = None,
        use_learned_prompts: bool = False,
        task: str | None = None,
        prompt_templates: Sequence[str] | None = None,
    ) -> torch.FloatTensor:
        """L2-normalised class embeddings `(n_classes, projection_dim)`.

        Learned prompts: the learned context of set `task` before each of its class names (all of them when
        `class_names` is None; other names are an error naming the learned ones). Hand prompts: the stored
        paper prompt of a class of `task` (`config.hand_prompts`, e.g. EMBED's "... breast tissue density 2:
        scattered fibroglandular densities."), else `prompt_template` (default `config.prompt_template`)
        applied to the name, tokenised by `processor`; `prompt_templates`: the ensemble of those templates.
        """
        device = self.logit_scale.device
        if prompt_templates is not None:
            if use_learned_prompts:
                raise ValueError("prompt_templates are hand prompts: leave them out with use_learned_prompts=True")
            return self.encode_prompt_ensemble(
                check_class_names(class_names or self.config.class_names), processor, prompt_templates
            )
        if use_learned_prompts:
            _, stored, _ = self.prompt_set(task)
            if not stored:
                raise ValueError("this model has no learned prompts: train stage 2 (setup_prompt_learning) first")
            features = self.get_prompt_features(task=task)
            if class_names is not None:
                names = check_class_names(class_names)
                unknown = [name for name in names if name not in stored]
                if unknown:
                    where = f" of set {task!r}" if task else ""
                    raise ValueError(
                        f"no learned prompt{where} for class name(s) {unknown}; the learned classes "
                        f"are {stored} (same spelling and case)"
                    )
                features = features[[stored.index(name) for name in names]]
        else:
            stored_prompts = (self.config.hand_prompts or {}).get(task or self.config.prompt_task) or {}
            if task is not None and not stored_prompts and task not in self.prompt_set_names():
                raise ValueError(
                    f"this model has no prompts for task {task!r}; it has "
                    f"{sorted(set(self.config.hand_prompts or {}) | set(filter(None, self.prompt_set_names())))}"
                )
            default_names = list(stored_prompts) if task is not None and stored_prompts else self.config.class_names
            names = check_class_names(class_names if class_names is not None else default_names)
            if processor is None:
                raise ValueError("hand-written prompts need a processor (or tokenizer) to tokenise them")
            template = prompt_template or self.config.prompt_template
            texts = [
                stored_prompts[n.lower()]
                if prompt_template is None and n.lower() in stored_prompts
                else template.format(n)
                for n in names
            ]
            batch = tokenizer_of(processor)(texts, padding=True, return_tensors="pt")
            features = self.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return F.normalize(features, dim=-1)

    def _text_side_version(self) -> tuple[int, ...]:
        """In-place update counters of every text-side tensor: the cache key goes stale after any step."""
        tensors = [
            *self.text_model.parameters(),
            *self.text_projection.parameters(),
            *self.text_projection.buffers(),
            *(learner.ctx for learner in self.prompt_sets.values()),
        ]
        return tuple(t._version for t in tensors)

    def cached_class_embeddings(self, **prompt_kwargs: Any) -> torch.FloatTensor:
        """`encode_class_prompts` memoised on its arguments and the text-side weights (eval mode only)."""
        if self.training:
            return self.encode_class_prompts(**prompt_kwargs)
        names = prompt_kwargs.get("class_names")
        key = (
            tuple(names) if names is not None else None,
            prompt_kwargs.get("prompt_template"),
            tuple(prompt_kwargs.get("prompt_templates") or ()),
            bool(prompt_kwargs.get("use_learned_prompts")),
            prompt_kwargs.get("task"),
            id(prompt_kwargs.get("processor")),
            self.logit_scale.device,
            self._text_side_version(),
        )
        cache = self.__dict__.setdefault("_class_embedding_cache", {})
        if key not in cache:
            cache.clear()
            with torch.no_grad():
                cache[key] = self.encode_class_prompts(**prompt_kwargs)
        return cache[key]

    # ----------------------------------------------------------------- classification
    @torch.no_grad()
    def zero_shot_classify(
        self,
        pixel_values: torch.FloatTensor | None = None,
        class_names: Sequence[str] | None = None,
        processor: Any = None,
        *,
        image_embeds: torch.FloatTensor | None = None,
        prompt_template: str | None = None,
        use_learned_prompts: bool = False,
        task: str | None = None,
        class_embeddings: torch.Tensor | None = None,
        return_logits: bool = False,
        prompt_templates: Sequence[str] | None = None,
    ) -> torch.FloatTensor:
        """Class probabilities `(batch, n_classes)` (softmax over `similarity_logits`, as CLIP).

        Images are `pixel_values` or L2-normalised `image_embeds` `(batch, D)` computed before (a whole
        evaluation set). `task` picks a named prompt set (learned prompts) or the stored paper prompts of that
        task (hand prompts), e.g. `zero_shot_classify(pixels, use_learned_prompts=True, task="density")`. Class
        embeddings are encoded once per (names, prompts, weights) and reused across calls; pass
        `class_embeddings` from `encode_class_prompts` to control it yourself. `prompt_templates` (hand prompts)
        averages the normalised embeddings of several templates per class (CLIP's ensembling).
        """
        if class_embeddings is None:
            if class_names is not None:
                check_class_names(class_names)
            class_embeddings = self.cached_class_embeddings(
                class_names=class_names,
                processor=processor,
                prompt_template=prompt_template,
                use_learned_prompts=use_learned_prompts,
                task=task,
                prompt_templates=prompt_templates,
            )
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("zero_shot_classify needs pixel_values or image_embeds")
            image_embeds = F.normalize(self.get_image_features(pixel_values), dim=-1)
        logits = self.similarity_logits(image_embeds.to(class_embeddings.device), class_embeddings)
        return logits if return_logits else logits.softmax(dim=-1)

    def zero_shot_pipeline(self, processor: Any, **kwargs: Any):
        """transformers' zero-shot image classification pipeline for this model, which also scores with learned
        prompts (`use_learned_prompts=True`, `task=`). Saved folders name it in `config.custom_pipelines`, so
        `pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)` gives the same."""
        from .pipeline_cleft import CLEFTZeroShotImageClassificationPipeline

        return CLEFTZeroShotImageClassificationPipeline(
            model=self, tokenizer=processor.tokenizer, image_processor=processor.image_processor, **kwargs
        )
