"""Zero-shot classification for CLEFT: class prompts (hand-written or learned) encoded once and reused."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


def _tokenizer_of(processor_or_tokenizer: Any) -> Any:
    return getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)


def _check_class_names(class_names: Sequence[str] | None) -> list[str]:
    names = list(class_names or [])
    if not names:
        raise ValueError("class_names is empty: give at least one class")
    if any(not isinstance(name, str) or not name.strip() for name in names):
        raise ValueError(f"class names must be non-empty strings, got {names}")
    return names


class CLEFTZeroShotMixin:
    """Methods of `CLEFTModel` for prompts and zero-shot classification (needs `CLEFTFeaturesMixin`).

    A model can carry several named sets of learned prompts (e.g. EMBED `density` and `birads`): the one in
    `prompt_learner` is named `config.prompt_task` (and described by `config.class_names`, ...); the others
    live in `prompt_sets` / `config.prompt_sets`. `task=` picks one wherever learned prompts are used.
    """

    # ----------------------------------------------------------------- learned prompt sets
    def prompt_set_names(self) -> list[str | None]:
        """Names of the learned prompt sets (the `prompt_learner` one first; None when it has no name)."""
        names = [self.config.prompt_task] if self.config.prompt_class_token_ids else []
        return names + list(self.config.prompt_sets or {})

    def prompt_set(self, task: str | None = None) -> tuple[Any, list[str] | None, list[list[int]] | None]:
        """`(prompt learner, class names, class token ids)` of the learned set `task` (None: `config.prompt_task`)."""
        config = self.config
        if task is None or task == config.prompt_task:
            return self.prompt_learner, config.class_names, config.prompt_class_token_ids
        sets = config.prompt_sets or {}
        if task not in sets:
            known = [name for name in self.prompt_set_names() if name]
            raise ValueError(f"this model has no learned prompt set {task!r}; its sets: {known or 'none (train stage 2)'}")
        return self.prompt_sets[task], sets[task]["class_names"], sets[task]["prompt_class_token_ids"]

    def _keep_active_set(self) -> None:
        """Move the `prompt_learner` set (named `config.prompt_task`) into `prompt_sets` before a new one."""
        config, learner = self.config, self.prompt_learner
        self.prompt_sets[config.prompt_task] = learner
        config.prompt_sets = {**(config.prompt_sets or {}), config.prompt_task: {
            "class_names": list(config.class_names), "prompt_class_token_ids": config.prompt_class_token_ids,
            "prompt_num_context_tokens": learner.num_context_tokens, "prompt_class_specific": learner.class_specific,
        }}

    def set_prompt_classes(self, class_names: Sequence[str], processor: Any) -> None:
        """Store the classes of the learned prompts (names + token ids in the config, so they travel with it)."""
        names = _check_class_names(class_names)
        token_ids = _tokenizer_of(processor)([" " + name for name in names], add_special_tokens=True)["input_ids"]
        learner = self.prompt_learner
        if learner.class_specific and learner.ctx.shape[0] != len(names):
            raise ValueError(
                f"class-specific context was built for {learner.ctx.shape[0]} classes, got {len(names)} names"
            )
        self.config.class_names = names
        self.config.prompt_class_token_ids = [list(ids) for ids in token_ids]

    def setup_prompt_learning(
        self,
        class_names: Sequence[str],
        processor: Any,
        *,
        num_context_tokens: int | None = None,
        class_specific: bool | None = None,
        init_text: str | None = None,
        task: str | None = None,
    ) -> None:
        """Stage-2 set-up: (re)build the context for `class_names` (sizes from the config unless given),
        initialise it from `init_text` (config default; empty string = random) and store the classes.

        With `task` (e.g. "density") the set gets that name; a model whose current set has another name keeps
        it in `prompt_sets`, so one model carries learned prompts for several tasks."""
        from .prompt_learning_cleft import CLEFTPromptLearner

        names = _check_class_names(class_names)
        config = self.config
        new_set = task is not None and task != config.prompt_task
        if new_set and config.prompt_task is not None and config.prompt_class_token_ids:
            self._keep_active_set()
        if new_set and task in (config.prompt_sets or {}):  # retrain a stored set: it becomes the active one
            config.prompt_sets = {k: v for k, v in config.prompt_sets.items() if k != task}
            del self.prompt_sets[task]
        if task is not None:
            config.prompt_task = task
        if num_context_tokens is not None:
            config.prompt_num_context_tokens = int(num_context_tokens)
        if class_specific is not None:
            config.prompt_class_specific = bool(class_specific)
        if init_text is not None:
            config.prompt_init_text = init_text
        learner = self.prompt_learner
        specific = config.prompt_class_specific
        wanted = (config.prompt_num_context_tokens, specific, len(names) if specific else None)
        current = (learner.num_context_tokens, learner.class_specific, learner.ctx.shape[0] if learner.class_specific else None)
        if new_set or current != wanted:
            self.prompt_learner = CLEFTPromptLearner(
                config.prompt_num_context_tokens, self.text_embed_dim, len(names), config.prompt_class_specific
            ).to(device=learner.ctx.device, dtype=learner.ctx.dtype)
        self.set_prompt_classes(names, processor)
        self.initialize_prompt_context(processor)

    @torch.no_grad()
    def initialize_prompt_context(self, processor: Any, init_text: str | None = None) -> None:
        """Initialise the learned context from the token embeddings of `init_text` (config default)."""
        text = init_text if init_text is not None else self.config.prompt_init_text
        if not text:
            self.prompt_learner.reset_parameters()
            return
        ids = _tokenizer_of(processor)(text, add_special_tokens=False)["input_ids"]
        embeddings = self.text_model.get_input_embeddings()(torch.tensor(ids, device=self.logit_scale.device))
        self.prompt_learner.initialize_from_embeddings(embeddings)

    # ----------------------------------------------------------------- class embeddings
    def encode_class_prompts(
        self,
        class_names: Sequence[str] | None = None,
        processor: Any = None,
        prompt_template: str | None = None,
        use_learned_prompts: bool = False,
        task: str | None = None,
    ) -> torch.FloatTensor:
        """L2-normalised class embeddings `(n_classes, projection_dim)`.

        Learned prompts: the learned context of set `task` before each of its class names (all of them when
        `class_names` is None; other names are an error naming the learned ones). Hand prompts: the stored
        paper prompt of a class of `task` (`config.hand_prompts`, e.g. EMBED's "... breast tissue density 2:
        scattered fibroglandular densities."), else `prompt_template` (default `config.prompt_template`)
        applied to the name, tokenised by `processor`.
        """
        device = self.logit_scale.device
        if use_learned_prompts:
            _, stored, _ = self.prompt_set(task)
            if not stored:
                raise ValueError("this model has no learned prompts: train stage 2 (setup_prompt_learning) first")
            features = self.get_prompt_features(task=task)
            if class_names is not None:
                names = _check_class_names(class_names)
                unknown = [name for name in names if name not in stored]
                if unknown:
                    where = f" of set {task!r}" if task else ""
                    raise ValueError(f"no learned prompt{where} for class name(s) {unknown}; the learned classes "
                                     f"are {stored} (same spelling and case)")
                features = features[[stored.index(name) for name in names]]
        else:
            stored_prompts = (self.config.hand_prompts or {}).get(task or self.config.prompt_task) or {}
            if task is not None and not stored_prompts and task not in self.prompt_set_names():
                raise ValueError(f"this model has no prompts for task {task!r}; it has "
                                 f"{sorted(set(self.config.hand_prompts or {}) | set(filter(None, self.prompt_set_names())))}")
            default_names = list(stored_prompts) if task is not None and stored_prompts else self.config.class_names
            names = _check_class_names(class_names if class_names is not None else default_names)
            if processor is None:
                raise ValueError("hand-written prompts need a processor (or tokenizer) to tokenise them")
            template = prompt_template or self.config.prompt_template
            texts = [stored_prompts[n.lower()] if prompt_template is None and n.lower() in stored_prompts
                     else template.format(n) for n in names]
            batch = _tokenizer_of(processor)(texts, padding=True, return_tensors="pt")
            features = self.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return F.normalize(features, dim=-1)

    def _text_side_version(self) -> tuple[int, ...]:
        """In-place update counters of every text-side tensor: the cache key goes stale after any step."""
        tensors = [*self.text_model.parameters(), *self.text_projection.parameters(), *self.text_projection.buffers(),
                   self.prompt_learner.ctx, *(learner.ctx for learner in self.prompt_sets.values())]
        return tuple(t._version for t in tensors)

    def cached_class_embeddings(self, **prompt_kwargs: Any) -> torch.FloatTensor:
        """`encode_class_prompts` memoised on its arguments and the text-side weights (eval mode only)."""
        if self.training:
            return self.encode_class_prompts(**prompt_kwargs)
        names = prompt_kwargs.get("class_names")
        key = (
            tuple(names) if names is not None else None,
            prompt_kwargs.get("prompt_template"),
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
    ) -> torch.FloatTensor:
        """Class probabilities `(batch, n_classes)` (softmax over `similarity_logits`, as CLIP).

        Images are `pixel_values` or L2-normalised `image_embeds` `(batch, D)` computed before (a whole
        evaluation set). `task` picks a named prompt set (learned prompts) or the stored paper prompts of that
        task (hand prompts), e.g. `zero_shot_classify(pixels, use_learned_prompts=True, task="density")`. Class
        embeddings are encoded once per (names, prompts, weights) and reused across calls; pass
        `class_embeddings` from `encode_class_prompts` to control it yourself.
        """
        if class_embeddings is None:
            if class_names is not None:
                _check_class_names(class_names)
            class_embeddings = self.cached_class_embeddings(
                class_names=class_names, processor=processor, prompt_template=prompt_template,
                use_learned_prompts=use_learned_prompts, task=task,
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
            model=self, tokenizer=processor.tokenizer, image_processor=processor.image_processor, **kwargs)
