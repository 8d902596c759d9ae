"""The dataset registry and the label views built on it (single- and multi-label datasets alike)."""

from __future__ import annotations

from datasets import ClassLabel, Dataset, Features, List, Value
import pytest

from cleft_hf.data import (
    CHEXPERT_5X200_CLASSES,
    EMBED_DENSITY_CLASSES,
    DatasetSpec,
    TaskSpec,
    add_label_captions,
    dataset_names,
    get_dataset_spec,
    register_dataset,
    restrict_labels,
    single_label_split,
)
from cleft_hf.data.registry import DATASET_REGISTRY, MAMMOGRAPHY
from cleft_hf.modeling.configuration_cleft import DEFAULT_PROMPT_TEMPLATE


def test_specs_describe_modality_tasks_and_paper_prompts():
    embed = get_dataset_spec("embed")
    assert embed.modality.tag == "mammography" and not embed.multi_label and embed.default_task == "birads"
    assert embed.task_name({"task": "density"}) == "density" and embed.task_name(None) == "birads"
    assert embed.hand_prompts("density")[1] == (
        "this is a breast 2d full-field digital mammogram of a patient with "
        "breast tissue density 2: scattered fibroglandular densities."
    )
    assert embed.hand_prompts("birads")[6].endswith("birads score 6: known biopsy-proven malignancy.")
    for name in ("mimic_cxr", "chexpert", "synthetic", "rsna"):
        spec = get_dataset_spec(name)
        assert spec.modality.tag == "chest-x-ray" and spec.prompt_template == DEFAULT_PROMPT_TEMPLATE
    cxr = get_dataset_spec("chexpert")
    assert cxr.task().class_names == CHEXPERT_5X200_CLASSES and cxr.multi_label
    assert cxr.hand_prompts()[4] == "this is a chest x ray of a patient with pleural effusion"
    assert cxr.modality.prompt_init_text == "this is a chest x ray of a patient with"
    assert cxr.label_caption([]) == "this is a chest x ray of a patient with no finding"


def test_unknown_dataset_and_task_name_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'embd'.*embed"):
        get_dataset_spec("embd")
    with pytest.raises(ValueError, match="no task 'birad'.*birads, density"):
        get_dataset_spec("embed").task_name({"task": "birad"})


def test_a_new_dataset_is_one_entry(tmp_path):
    def load_toy(root, **kwargs):
        return {
            "train": Dataset.from_dict({"labels": [0, 1]}, features=Features({"labels": ClassLabel(names=["a", "b"])}))
        }

    spec = register_dataset(
        DatasetSpec("toy_mammo", "Toy", load_toy, MAMMOGRAPHY, {"ab": TaskSpec(("a", "b"))}, multi_label=False)
    )
    try:
        assert "toy_mammo" in dataset_names() and get_dataset_spec("toy_mammo") is spec
        assert spec.load(str(tmp_path))["train"].num_rows == 2
        assert spec.hand_prompts() == [MAMMOGRAPHY.prompt_template.format(n) for n in ("a", "b")]
    finally:
        DATASET_REGISTRY.pop("toy_mammo")


def _single_label() -> Dataset:
    return Dataset.from_dict(
        {"labels": [0, 3, 1, 3, 2], "text": list("abcde")},
        features=Features({"labels": ClassLabel(names=list(EMBED_DENSITY_CLASSES)), "text": Value("string")}),
    )


def _multi_label() -> Dataset:
    names = ["No Finding", *CHEXPERT_5X200_CLASSES]
    features = Features(
        {
            "labels": List(Value("float32")),
            "label_mask": List(Value("float32")),
            "positive_classes": List(ClassLabel(names=names)),
        }
    )
    return Dataset.from_dict(
        {
            "labels": [[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 0, 0]],
            "label_mask": [[1] * 6] * 3,
            "positive_classes": [[1], [2, 4], [0]],
        },
        features=features,
    )


def test_restrict_labels_gives_multi_hot_rows_for_both_label_kinds():
    single = restrict_labels(_single_label(), ["extremely dense", "almost entirely fat"])
    assert single["labels"] == [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]] and single["text"] == ["a", "b", "d"]
    multi = restrict_labels(_multi_label(), ["Edema", "Cardiomegaly"])
    assert multi["labels"] == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]] and len(multi["label_mask"][0]) == 2
    with pytest.raises(ValueError, match="not among the dataset's labels"):
        restrict_labels(_single_label(), ["dense"])


def test_single_label_split_restricts_and_relabels():
    spec = get_dataset_spec("embed")
    subset, names = single_label_split(_single_label(), spec, "density", ["heterogeneously dense", "extremely dense"])
    assert names == ["heterogeneously dense", "extremely dense"] and subset["labels"] == [1, 1, 0]
    assert subset.features["labels"].names == names
    multi, names = single_label_split(_multi_label(), get_dataset_spec("chexpert"))
    assert names == list(CHEXPERT_5X200_CLASSES) and multi["labels"] == [0]  # the image with one of the five


def test_label_captions_follow_the_dataset():
    single = add_label_captions(_single_label(), get_dataset_spec("embed"), "density")
    assert single["label_caption"][1].endswith("breast tissue density 4: extremely dense.")
    multi = add_label_captions(_multi_label(), get_dataset_spec("chexpert"))
    assert multi["label_caption"][1] == "this is a chest x ray of a patient with cardiomegaly, edema"
