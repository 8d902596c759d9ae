"""Datasets for CLEFT: loaders returning ``datasets.DatasetDict`` (MIMIC-CXR-JPG, CheXpert, RSNA Pneumonia, EMBED),
balanced zero-shot test builders, DICOM reading, ``set_transform`` transforms and the built-in synthetic demo data."""

from ._tables import LoadReport, label_names
from .chexpert import CHEXPERT_5X200_CLASSES, CHEXPERT_CLASSES, build_chexpert_5x200, chexpert_caption, load_chexpert
from .dicom import read_dicom, write_dicom
from .embed import (
    EMBED_BIRADS_CLASSES,
    EMBED_DENSITY_CLASSES,
    build_embed_birads_7x200,
    build_embed_density_4x500,
    embed_class_prompts,
    load_embed,
)
from .mimic_cxr import load_mimic_cxr
from .reports import extract_sections, report_text
from .rsna import RSNA_CLASSES, build_rsna_balanced_test, load_rsna_pneumonia
from .splits import build_balanced_split
from .transforms import make_eval_transform, make_train_transform, with_image_transform

__all__ = [
    "CHEXPERT_5X200_CLASSES", "CHEXPERT_CLASSES", "EMBED_BIRADS_CLASSES", "EMBED_DENSITY_CLASSES", "RSNA_CLASSES",
    "LoadReport", "build_balanced_split", "build_chexpert_5x200", "build_embed_birads_7x200",
    "build_embed_density_4x500", "build_rsna_balanced_test", "chexpert_caption", "embed_class_prompts",
    "extract_sections", "label_names", "load_chexpert", "load_embed", "load_mimic_cxr", "load_rsna_pneumonia",
    "make_eval_transform", "make_train_transform", "read_dicom", "report_text", "with_image_transform", "write_dicom",
]
