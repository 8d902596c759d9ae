"""Run arguments of the evaluation (`examples/evaluate.py`, `cleft_hf.evaluation.runner.run_evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..arguments import CommonArguments, arg, require

EVALUATION_TASKS = ("zero_shot", "linear_probe", "retrieval")


@dataclass
class EvaluateArguments(CommonArguments):
    """Evaluation: zero-shot (hand and learned prompts), linear probe on frozen features, retrieval."""

    model_name_or_path: str | None = arg(None, "Model folder or Hub id to evaluate (required).")
    allow_partial_weights: bool = arg(
        False, "Evaluate even when the model's weights do not cover it (missing ones randomly initialised)."
    )
    per_device_batch_size: int = arg(64, "Examples per process per forward pass.")
    train_split: str = arg("train", "Split the linear probe trains on.")
    eval_split: str = arg("test", "Split evaluated.")
    tasks: list[str] = arg(list(EVALUATION_TASKS), "Any of zero_shot, linear_probe, retrieval.")
    class_names: list[str] | None = arg(None, "Classes for zero-shot (none: the dataset's).")
    class_prompts: list[str] | None = arg(
        None, "Hand prompts, one per class, instead of prompt_template (default for embed: the paper's prompts)."
    )
    balanced_per_class: int | None = arg(
        None, "Evaluate on a balanced subset with this many images per class (200: CheXpert 5x200; none: all)."
    )
    prompt_template: str | None = arg(None, "Hand prompt with {} for the class (none: the model's template).")
    linear_probe_fractions: list[float] = arg([0.01, 0.1, 1.0], "Fractions of training labels for the probe.")
    retrieval_ks: list[int] = arg([1, 5, 10], "K values of recall@K.")
    bootstrap: int = arg(
        1000, "Bootstrap draws (images resampled) for 95-percent intervals of zero-shot metrics; 0: none."
    )
    negative_template: str | None = arg(
        None, "Also score positive / negative prompt pairs per class ('{}' vs this, e.g. 'no {}'; CheXzero)."
    )
    prompt_templates: list[str] | None = arg(
        None, "Hand prompts as an ensemble: templates with {} averaged per class (CLIP); none: one prompt per class."
    )

    def check_values(self) -> None:
        super().check_values()
        require(bool(self.model_name_or_path), "config field 'model_name_or_path' (the model to evaluate) is required")
        unknown = [task for task in self.tasks if task not in EVALUATION_TASKS]
        require(
            bool(self.tasks) and not unknown,
            f"config field 'tasks' takes {', '.join(EVALUATION_TASKS)}; got {self.tasks}",
        )
        require(
            all(0.0 < f <= 1.0 for f in self.linear_probe_fractions),
            f"config field 'linear_probe_fractions' must be in (0, 1], got {self.linear_probe_fractions}",
        )
        require(
            all(k >= 1 for k in self.retrieval_ks),
            f"config field 'retrieval_ks' must be >= 1, got {self.retrieval_ks}",
        )
        require(self.bootstrap >= 0, f"config field 'bootstrap' must be >= 0 (0: no intervals), got {self.bootstrap}")
        require(
            self.negative_template is None or "{}" in self.negative_template,
            f"config field 'negative_template' must contain '{{}}', got {self.negative_template!r}",
        )
        require(
            all("{}" in t for t in self.prompt_templates or ()),
            f"config field 'prompt_templates' must each contain '{{}}', got {self.prompt_templates}",
        )
        require(
            self.prompt_template is None or "{}" in self.prompt_template,
            f"config field 'prompt_template' must contain '{{}}', got {self.prompt_template!r}",
        )


__all__ = ["EVALUATION_TASKS", "EvaluateArguments"]
