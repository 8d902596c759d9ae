"""CLEFT's learned prompt sets, stored one way: `model.prompt_sets` (an `nn.ModuleDict` of `CLEFTPromptLearner`
keyed by task, e.g. EMBED `density` and `birads`) and `config.prompt_sets` (`{task: {"class_names",
"prompt_class_token_ids", "prompt_num_context_tokens", "prompt_class_specific"}}`); `config.active_prompt_set`
names the set used when `task=None` (the last one set up). Older folders (the active set in `prompt_learner` and
the top-level `class_names` / `prompt_class_token_ids` / `prompt_task`) are folded in when they are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .prompt_learning_cleft import CLEFTPromptLearner

# Key of a set set up without a task name (`prompt_set_names()` reports it as None).
UNNAMED_PROMPT_SET = "_unnamed"
# Config fields of the older layout: they describe the set that was in `prompt_learner`.
LEGACY_PROMPT_FIELDS = ("class_names", "prompt_class_token_ids", "prompt_task")


def tokenizer_of(processor_or_tokenizer: Any) -> Any:
    return getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)


def check_class_names(class_names: Sequence[str] | None) -> list[str]:
    names = list(class_names or [])
    if not names:
        raise ValueError("class_names is empty: give at least one class")
    if any(not isinstance(name, str) or not name.strip() for name in names):
        raise ValueError(f"class names must be non-empty strings, got {names}")
    return names


def fold_legacy_prompt_fields(config: Any, legacy: dict[str, Any], from_disk: bool) -> None:
    """Put an older config's active set (top-level `class_names`, `prompt_class_token_ids`, `prompt_task`) into
    `config.prompt_sets` and make it the active set. Class names without token ids (never set up) are dropped
    from a saved config and an error in a new one."""
    names, token_ids, task = (legacy.get(field) for field in LEGACY_PROMPT_FIELDS)
    if token_ids is None:
        if names is not None and not from_disk:
            raise ValueError(
                "class_names is no CLEFTConfig field: learned prompt sets are set up on the model, "
                "model.setup_prompt_learning(class_names, processor, task=...)"
            )
        return
    key = task or UNNAMED_PROMPT_SET
    entry = {
        "class_names": names,
        "prompt_class_token_ids": token_ids,
        "prompt_num_context_tokens": config.prompt_num_context_tokens,
        "prompt_class_specific": config.prompt_class_specific,
    }
    config.prompt_sets = {key: entry, **{k: v for k, v in (config.prompt_sets or {}).items() if k != key}}
    config.active_prompt_set = key


def check_prompt_sets(config: Any) -> None:
    """Every set has non-empty, distinct class names and one token-id list per class; the active set exists."""
    for task, entry in (config.prompt_sets or {}).items():
        names = entry.get("class_names")
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"prompt_sets[{task!r}]: class_names must be a non-empty list of non-empty strings")
        if len(set(names)) != len(names):
            raise ValueError(f"prompt_sets[{task!r}]: class_names has duplicates: {names}")
        if len(entry.get("prompt_class_token_ids") or []) != len(names):
            raise ValueError(f"prompt_sets[{task!r}]: prompt_class_token_ids must have one entry per class name")
    if config.active_prompt_set is not None and config.active_prompt_set not in (config.prompt_sets or {}):
        raise ValueError(f"active_prompt_set {config.active_prompt_set!r} is not in prompt_sets")


def legacy_prompt_key_mapping(config: Any) -> dict[str, str]:
    """State-dict renames of the older layout: its `prompt_learner.ctx` is the context of the active set."""
    if config.active_prompt_set is None:
        return {}
    return {r"^prompt_learner\.ctx$": f"prompt_sets.{config.active_prompt_set}.ctx"}


def build_prompt_learner(entry: dict[str, Any], config: Any, hidden_size: int) -> CLEFTPromptLearner:
    """The (untrained) learner of a `config.prompt_sets` entry (sizes missing from it: the config's)."""
    return CLEFTPromptLearner(
        entry.get("prompt_num_context_tokens", config.prompt_num_context_tokens),
        hidden_size,
        len(entry["class_names"]),
        entry.get("prompt_class_specific", config.prompt_class_specific),
    )


class CLEFTPromptSetsMixin:
    """Methods of `CLEFTModel` that set up and look up its learned prompt sets (`prompt_sets`, `config`)."""

    def prompt_set_names(self) -> list[str | None]:
        """Names of the learned prompt sets, the active one first (None for a set set up without a name)."""
        config = self.config
        keys = list(config.prompt_sets or {})
        if config.active_prompt_set in keys:
            keys.remove(config.active_prompt_set)
            keys.insert(0, config.active_prompt_set)
        return [None if key == UNNAMED_PROMPT_SET else key for key in keys]

    def _prompt_set_key(self, task: str | None) -> str:
        config = self.config
        if task is None:
            if config.active_prompt_set is None:
                raise ValueError("this model has no learned prompts: train stage 2 (setup_prompt_learning) first")
            return config.active_prompt_set
        if task not in (config.prompt_sets or {}):
            known = [name for name in self.prompt_set_names() if name]
            raise ValueError(
                f"this model has no learned prompt set {task!r}; its sets: {known or 'none (train stage 2)'}"
            )
        return task

    def prompt_set(self, task: str | None = None) -> tuple[CLEFTPromptLearner, list[str], list[list[int]]]:
        """`(prompt learner, class names, class token ids)` of the learned set `task` (None: the active set)."""
        key = self._prompt_set_key(task)
        entry = self.config.prompt_sets[key]
        return self.prompt_sets[key], entry["class_names"], entry["prompt_class_token_ids"]

    @property
    def prompt_learner(self) -> CLEFTPromptLearner:
        """The active set's learner, `prompt_set()[0]` (a view: the sets live in `prompt_sets`)."""
        return self.prompt_set()[0]

    def _store_prompt_set(self, key: str, learner: CLEFTPromptLearner, names: list[str], token_ids: list) -> None:
        config = self.config
        entry = {
            "class_names": names,
            "prompt_class_token_ids": token_ids,
            "prompt_num_context_tokens": learner.num_context_tokens,
            "prompt_class_specific": learner.class_specific,
        }
        config.prompt_sets = {**(config.prompt_sets or {}), key: entry}
        config.active_prompt_set = key
        self.prompt_sets[key] = learner

    def _new_prompt_learner(self, num_classes: int) -> CLEFTPromptLearner:
        config = self.config
        learner = CLEFTPromptLearner(
            config.prompt_num_context_tokens, self.text_embed_dim, num_classes, config.prompt_class_specific
        )
        return learner.to(self.logit_scale.device, self.logit_scale.dtype)

    def set_prompt_classes(self, class_names: Sequence[str], processor: Any) -> None:
        """Store the classes of the active set's learned prompts (names + token ids in the config, so they travel
        with it); a model without a set gets one (context sizes from the config)."""
        names = check_class_names(class_names)
        key = self.config.active_prompt_set
        learner = self.prompt_sets[key] if key is not None else self._new_prompt_learner(len(names))
        if learner.class_specific and learner.ctx.shape[0] != len(names):
            raise ValueError(
                f"class-specific context was built for {learner.ctx.shape[0]} classes, got {len(names)} names"
            )
        self._store_prompt_set(key or UNNAMED_PROMPT_SET, learner, names, self._class_token_ids(names, processor))

    @staticmethod
    def _class_token_ids(names: list[str], processor: Any) -> list[list[int]]:
        token_ids = tokenizer_of(processor)([" " + name for name in names], add_special_tokens=True)["input_ids"]
        return [list(ids) for ids in token_ids]

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

        With `task` (e.g. "density") the set gets that name and becomes the active one; the other named sets are
        kept, so one model carries learned prompts for several tasks. Without, the active set is rebuilt."""
        names = check_class_names(class_names)
        config = self.config
        if num_context_tokens is not None:
            config.prompt_num_context_tokens = int(num_context_tokens)
        if class_specific is not None:
            config.prompt_class_specific = bool(class_specific)
        if init_text is not None:
            config.prompt_init_text = init_text
        active = config.active_prompt_set
        key = task or active or UNNAMED_PROMPT_SET
        if key != UNNAMED_PROMPT_SET and UNNAMED_PROMPT_SET in self.prompt_sets:  # an unnamed set gives way
            config.prompt_sets = {k: v for k, v in config.prompt_sets.items() if k != UNNAMED_PROMPT_SET}
            del self.prompt_sets[UNNAMED_PROMPT_SET]
        specific = config.prompt_class_specific
        wanted = (config.prompt_num_context_tokens, specific, len(names) if specific else None)
        learner = self.prompt_sets[key] if key == active and key in self.prompt_sets else None  # the active set
        if learner is None or wanted != (
            learner.num_context_tokens,
            learner.class_specific,
            learner.ctx.shape[0] if learner.class_specific else None,
        ):
            learner = self._new_prompt_learner(len(names))
        self._store_prompt_set(key, learner, names, self._class_token_ids(names, processor))
        self.initialize_prompt_context(processor)

    @torch.no_grad()
    def initialize_prompt_context(self, processor: Any, init_text: str | None = None, task: str | None = None) -> None:
        """Initialise the learned context of set `task` (None: the active one) from the token embeddings of
        `init_text` (config default)."""
        learner = self.prompt_set(task)[0]
        text = init_text if init_text is not None else self.config.prompt_init_text
        if not text:
            learner.reset_parameters()
            return
        ids = tokenizer_of(processor)(text, add_special_tokens=False)["input_ids"]
        embeddings = self.text_model.get_input_embeddings()(torch.tensor(ids, device=self.logit_scale.device))
        learner.initialize_from_embeddings(embeddings)


__all__ = ["CLEFTPromptSetsMixin", "UNNAMED_PROMPT_SET"]
