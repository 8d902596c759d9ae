"""The dataset registry: the one place a dataset family is described (`DatasetSpec`).

A spec names its loader, imaging modality (with its prompt template), classification tasks (class names and the
class texts of the hand prompts), whether labels are multi-hot, and how a caption is built from label names.
Training, evaluation, the model card and the demo look datasets up here; a new dataset is one `register_dataset`.

    spec = get_dataset_spec("embed")
    spec.hand_prompts("density")  # ["this is a breast 2d full-field digital mammogram of a patient with breast ..."]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import DatasetDict

from ..modeling.configuration_cleft import DEFAULT_PROMPT_TEMPLATE
from .chexpert import CHEXPERT_5X200_CLASSES, chexpert_caption, load_chexpert
from .embed import EMBED_BIRADS_CLASSES, EMBED_DENSITY_CLASSES, EMBED_PROMPT_TEMPLATE, load_embed
from .mimic_cxr import load_mimic_cxr
from .rsna import RSNA_CLASSES, load_rsna_pneumonia


@dataclass(frozen=True)
class Modality:
    """An imaging modality: Hub tag, words for text, and the paper's hand-prompt template (`{}` = class text)."""

    tag: str
    words: str
    prompt_template: str

    @property
    def prompt_init_text(self) -> str:
        """The template without its class slot: the text that initialises learned context prompts."""
        return self.prompt_template.replace("{}", "").strip()


CHEST_X_RAY = Modality("chest-x-ray", "chest X-ray", DEFAULT_PROMPT_TEMPLATE)
MAMMOGRAPHY = Modality("mammography", "mammography", EMBED_PROMPT_TEMPLATE)
MODALITIES = {modality.tag: modality for modality in (CHEST_X_RAY, MAMMOGRAPHY)}


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: class names as the dataset spells them, and each class's text in a hand prompt
    (default: the lower-cased name)."""

    class_names: tuple[str, ...]
    class_texts: tuple[str, ...] | None = None

    def texts(self, class_names: Sequence[str] | None = None) -> list[str]:
        """Class texts of `class_names` (default: all); names outside the task are lower-cased as they are."""
        table = dict(zip(self.class_names, self.class_texts or [n.lower() for n in self.class_names]))
        return [table.get(name, name.lower()) for name in (class_names or self.class_names)]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset family. `loader(data_root, **kwargs)` returns a DatasetDict; `task_argument` is the loader
    keyword that selects the task (EMBED: `task`), else the dataset has one task; `caption_builder(names)` makes
    the caption of an image from its positive class names (default: the modality's template)."""

    name: str
    display_name: str
    loader: Callable[..., DatasetDict]
    modality: Modality
    tasks: Mapping[str, TaskSpec]
    multi_label: bool
    task_argument: str | None = None
    caption_builder: Callable[[Sequence[str]], str] | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def default_task(self) -> str:
        return next(iter(self.tasks))

    @property
    def prompt_template(self) -> str:
        return self.modality.prompt_template

    def load(self, data_root: str | None, **loader_kwargs: Any) -> DatasetDict:
        """The dataset read from `data_root` (as downloaded) with the loader's keyword arguments."""
        if data_root is None:
            raise ValueError(f"dataset '{self.name}' needs data_root (the folder of its files and tables)")
        return self.loader(data_root, **loader_kwargs)

    def task_name(self, loader_kwargs: Mapping[str, Any] | None = None) -> str:
        """The task a run's loader arguments select (the default task when they do not say)."""
        chosen = (loader_kwargs or {}).get(self.task_argument) if self.task_argument else None
        return self.check_task(chosen or self.default_task)

    def check_task(self, task: str) -> str:
        if task not in self.tasks:
            raise ValueError(f"dataset '{self.name}' has no task {task!r}; its tasks: {', '.join(self.tasks)}")
        return task

    def task(self, task: str | None = None) -> TaskSpec:
        return self.tasks[self.check_task(task or self.default_task)]

    def hand_prompts(
        self, task: str | None = None, class_names: Sequence[str] | None = None, prompt_template: str | None = None
    ) -> list[str]:
        """The paper's zero-shot prompt of each class (template applied to the class texts)."""
        template = prompt_template or self.prompt_template
        return [template.format(text) for text in self.task(task).texts(class_names)]

    def label_caption(self, positive_names: Sequence[str]) -> str:
        """Caption built from an image's positive class names (the reference code's CheXpert captions)."""
        if self.caption_builder is not None:
            return self.caption_builder(positive_names)
        texts = [n.lower() for n in positive_names]
        return self.prompt_template.format(", ".join(texts) or "no finding")


def _embed_task(classes: Sequence[str], label: str, first: int) -> TaskSpec:
    return TaskSpec(tuple(classes), tuple(f"{label} {first + k}: {name}." for k, name in enumerate(classes)))


DATASET_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a dataset family; its name and aliases become valid `dataset` values."""
    for name in (spec.name, *spec.aliases):
        DATASET_REGISTRY[name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset name; an unknown name is an error listing the known ones."""
    if name not in DATASET_REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASET_REGISTRY))}")
    return DATASET_REGISTRY[name]


def dataset_names() -> tuple[str, ...]:
    return tuple(DATASET_REGISTRY)


# What the chest X-ray datasets labelled with the CheXpert findings share (they differ in name and loader).
_CHEST_X_RAY_SPEC = dict(
    modality=CHEST_X_RAY,
    tasks={"findings": TaskSpec(CHEXPERT_5X200_CLASSES)},
    multi_label=True,
    caption_builder=chexpert_caption,
)
register_dataset(DatasetSpec("mimic_cxr", "MIMIC-CXR", load_mimic_cxr, **_CHEST_X_RAY_SPEC))
register_dataset(
    DatasetSpec("synthetic", "synthetic demo data (MIMIC-CXR format)", load_mimic_cxr, **_CHEST_X_RAY_SPEC)
)
register_dataset(DatasetSpec("chexpert", "CheXpert", load_chexpert, **_CHEST_X_RAY_SPEC))
register_dataset(
    DatasetSpec(
        "rsna",
        "RSNA Pneumonia",
        load_rsna_pneumonia,
        CHEST_X_RAY,
        {"pneumonia": TaskSpec(RSNA_CLASSES)},
        multi_label=False,
    )
)
register_dataset(
    DatasetSpec(
        "embed",
        "EMBED",
        load_embed,
        MAMMOGRAPHY,
        {
            "birads": _embed_task(EMBED_BIRADS_CLASSES, "birads score", 0),
            "density": _embed_task(EMBED_DENSITY_CLASSES, "breast tissue density", 1),
        },
        multi_label=False,
        task_argument="task",
    )
)

__all__ = [
    "CHEST_X_RAY",
    "DATASET_REGISTRY",
    "DatasetSpec",
    "MAMMOGRAPHY",
    "MODALITIES",
    "Modality",
    "TaskSpec",
    "dataset_names",
    "get_dataset_spec",
    "register_dataset",
]
