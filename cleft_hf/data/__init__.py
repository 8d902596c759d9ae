"""Datasets for CLEFT: the dataset registry (`DatasetSpec`), loaders returning ``datasets.DatasetDict`` (MIMIC-CXR-JPG,
CheXpert, RSNA Pneumonia, EMBED), balanced zero-shot test builders, label views, DICOM reading, transforms and
the training/evaluation DataLoader."""

from ._tables import LoadReport, label_names
from .chexpert import CHEXPERT_5X200_CLASSES, CHEXPERT_CLASSES, build_chexpert_5x200, chexpert_caption, load_chexpert
from .collator import ImageTextCollator, caption_ids
from .dicom import read_dicom
from .embed import (
    EMBED_BIRADS_CLASSES,
    EMBED_DENSITY_CLASSES,
    EMBED_PROMPT_TEMPLATE,
    build_embed_birads_7x200,
    build_embed_density_4x500,
    load_embed,
)
from .label_views import add_label_captions, get_split, restrict_labels, single_finding_set, single_label_split
from .loader import make_loader
from .mimic_cxr import load_mimic_cxr
from .registry import (
    DATASET_REGISTRY,
    MODALITIES,
    DatasetSpec,
    Modality,
    TaskSpec,
    dataset_names,
    get_dataset_spec,
    register_dataset,
)
from .reports import extract_sections, report_text
from .rsna import RSNA_CLASSES, build_rsna_balanced_test, load_rsna_pneumonia
from .splits import build_balanced_split, exclude_images
from .transforms import Augmentation, ImageDecodeError, make_eval_transform, make_train_transform, with_image_transform

__all__ = [
    "CHEXPERT_5X200_CLASSES",
    "CHEXPERT_CLASSES",
    "DATASET_REGISTRY",
    "EMBED_BIRADS_CLASSES",
    "EMBED_DENSITY_CLASSES",
    "Augmentation",
    "EMBED_PROMPT_TEMPLATE",
    "MODALITIES",
    "RSNA_CLASSES",
    "DatasetSpec",
    "ImageDecodeError",
    "ImageTextCollator",
    "caption_ids",
    "LoadReport",
    "Modality",
    "TaskSpec",
    "add_label_captions",
    "build_balanced_split",
    "build_chexpert_5x200",
    "exclude_images",
    "build_embed_birads_7x200",
    "build_embed_density_4x500",
    "build_rsna_balanced_test",
    "chexpert_caption",
    "dataset_names",
    "extract_sections",
    "get_dataset_spec",
    "get_split",
    "label_names",
    "load_chexpert",
    "load_embed",
    "load_mimic_cxr",
    "load_rsna_pneumonia",
    "make_eval_transform",
    "make_loader",
    "make_train_transform",
    "read_dicom",
    "register_dataset",
    "report_text",
    "restrict_labels",
    "single_finding_set",
    "single_label_split",
    "with_image_transform",
]
