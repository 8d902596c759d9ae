"""Habits that keep the code straight: the library never imports the trainer, one source per option set, and the
first errors a new user meets say what to do."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from cleft_hf import CLEFTModel, CLEFTProcessor
from cleft_hf.arguments import ConfigError, load_arguments, parse_arguments
from cleft_hf.data.transforms import Augmentation
from cleft_hf.training.config import PretrainArguments

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "cleft_hf" / "demo" / "demo.yaml"


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the cleft_hf modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add(f"{base}.{node.module or ''}".rstrip(".") if node.level else node.module or "")
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("cleft_hf")}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_library_never_imports_the_trainer_or_the_demo():
    library = [
        p for p in (REPO / "cleft_hf").rglob("*.py") if p.relative_to(REPO).parts[1] not in ("training", "demo")
    ]
    offending = {
        str(p.relative_to(REPO)): sorted(
            m for m in _imported_modules(p) if _inside(m, "cleft_hf.training") or _inside(m, "cleft_hf.demo")
        )
        for p in library
    }
    assert not {path: names for path, names in offending.items() if names}
    trainer = (REPO / "cleft_hf" / "training").rglob("*.py")  # and the trainer never calls the Hub code
    assert not [str(p) for p in trainer if any(_inside(m, "cleft_hf.hub") for m in _imported_modules(p))]


def test_augmentation_help_names_every_option():
    help_text = next(f for f in fields(PretrainArguments) if f.name == "augmentation").metadata["help"]
    assert all(option.name in help_text for option in fields(Augmentation))


@pytest.mark.parametrize(
    "augmentation, message",
    [
        ({"rato": [0.9, 1.1]}, r"unknown config key 'rato' \(in augmentation.*did you mean ratio\?"),
        ({"scale": [0.2]}, r"'augmentation': scale takes two numbers"),
        ({"max_rotation": "x"}, r"'augmentation': max_rotation must be a number"),
    ],
)
def test_augmentation_is_checked_when_parsed(tmp_path, augmentation, message):
    with pytest.raises(ConfigError, match=message):
        load_arguments(
            PretrainArguments,
            DEMO_CONFIG,
            {"data_root": str(tmp_path), "augmentation": augmentation},
            section="pretrain",
        )
    ratio = {"data_root": str(tmp_path), "augmentation": {"ratio": [0.9, 1.1]}}  # offered by the help, accepted
    assert load_arguments(PretrainArguments, DEMO_CONFIG, ratio, section="pretrain").augmentation["ratio"] == [
        0.9,
        1.1,
    ]


def test_a_model_field_on_the_command_line_shows_the_model_config_syntax(tmp_path):
    argv = ["--config", str(DEMO_CONFIG), "--data_root", str(tmp_path), "--text_model_name_or_path", "my/llm"]
    with pytest.raises(ConfigError, match=r'--model_config "\{text_model_name_or_path: my/llm\}"'):
        parse_arguments(PretrainArguments, argv, section="pretrain")


@pytest.mark.parametrize("folder", ["/no/such/folder", "no/such/folder", "./no_such_folder"])
def test_a_missing_model_folder_is_named(folder):
    with pytest.raises(FileNotFoundError, match=f"model folder {folder} does not exist"):
        CLEFTModel.from_pretrained(folder)


def test_the_image_processor_is_found_under_the_backend_transformers_asks_for(tmp_path, processor):
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

    from cleft_hf import CLEFTConfig, CLEFTImageProcessor

    # transformers asks for "torchvision" when it is installed (else "pil") and warns when it falls back
    assert IMAGE_PROCESSOR_MAPPING[CLEFTConfig] == {"torchvision": CLEFTImageProcessor, "pil": CLEFTImageProcessor}
    processor.save_pretrained(tmp_path)
    assert type(CLEFTProcessor.from_pretrained(tmp_path).image_processor) is CLEFTImageProcessor
