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
    """Methods of `CLEFTModel` for prompts and zero-shot classification (needs `CLEFTFeaturesMixin`)."""

    # ----------------------------------------------------------------- learned prompt classes
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
    ) -> None:
        """Stage-2 set-up: (re)build the context for `class_names` (sizes from the config unless given),
        initialise it from `init_text` (config default; empty string = random) and store the classes."""
        from .prompt_learning_cleft import CLEFTPromptLearner

        names = _check_class_names(class_names)
        config = self.config
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
        if current != wanted:
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
    ) -> torch.FloatTensor:
        """L2-normalised class embeddings `(n_classes, projection_dim)`.

        Hand prompts: `prompt_template.format(name)` tokenised by `processor`. Learned prompts: the learned
        context before each class name (stored names when `class_names` is None).
        """
        if use_learned_prompts:
            if class_names is None or list(class_names) == self.config.class_names:
                features = self.get_prompt_features()
            else:
                if processor is None:
                    raise ValueError("new class names for learned prompts need a processor to tokenise them")
                names = _check_class_names(class_names)
                if self.prompt_learner.class_specific:
                    raise ValueError("class-specific context only knows the stored class names")
                batch = _tokenizer_of(processor)([" " + n for n in names], padding=True, return_tensors="pt")
                device = self.logit_scale.device
                features = self.get_prompt_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        else:
            names = _check_class_names(class_names if class_names is not None else self.config.class_names)
            if processor is None:
                raise ValueError("hand-written prompts need a processor (or tokenizer) to tokenise them")
            template = prompt_template or self.config.prompt_template
            batch = _tokenizer_of(processor)([template.format(n) for n in names], padding=True, return_tensors="pt")
            device = self.logit_scale.device
            features = self.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return F.normalize(features, dim=-1)

    def _text_side_version(self) -> tuple[int, ...]:
        """In-place update counters of every text-side tensor: the cache key goes stale after any step."""
        tensors = [*self.text_model.parameters(), self.text_projection.weight, self.prompt_learner.ctx]
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
        class_embeddings: torch.Tensor | None = None,
        return_logits: bool = False,
    ) -> torch.FloatTensor:
        """Class probabilities `(batch, n_classes)` (softmax over `similarity_logits`, as CLIP).

        Images are `pixel_values` or L2-normalised `image_embeds` `(batch, D)` computed before (a whole
        evaluation set). Class embeddings are encoded once per (names, prompts, weights) and reused across
        calls; pass `class_embeddings` from `encode_class_prompts` to control it yourself.
        """
        if class_embeddings is None:
            if class_names is not None:
                _check_class_names(class_names)
            class_embeddings = self.cached_class_embeddings(
                class_names=class_names, processor=processor, prompt_template=prompt_template,
                use_learned_prompts=use_learned_prompts,
            )
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("zero_shot_classify needs pixel_values or image_embeds")
            image_embeds = F.normalize(self.get_image_features(pixel_values), dim=-1)
        logits = self.similarity_logits(image_embeds.to(class_embeddings.device), class_embeddings)
        return logits if return_logits else logits.softmax(dim=-1)
