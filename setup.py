"""cleft-hf: Hugging Face-native CLEFT (contrastive language-image pretraining with a PEFT-adapted causal LLM)."""

from pathlib import Path
import shutil

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py


class BuildWithCardTemplate(build_py):
    """Installs the top-level `model_card.md` (the Hub card template) as `cleft_hf/hub/model_card.md`."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "cleft_hf" / "hub" / "model_card.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).resolve().parent / "model_card.md", target)


setup(
    name="cleft-hf",
    version="0.1.0",
    description="CLEFT for medical images: CLIP-style pretraining with a PEFT-adapted causal LLM text encoder",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Namespace packages too: the metric folders (cleft_hf/metrics/<name>/<name>.py, loaded by `evaluate` from
    # their folder) are modules of their own, not data.
    packages=find_namespace_packages(include=["cleft_hf", "cleft_hf.*"], exclude=["*.__pycache__"])
    + ["cleft_hf.modeling"],
    package_dir={"cleft_hf.modeling": "modeling"},
    package_data={"cleft_hf": ["demo/*.yaml"]},
    cmdclass={"build_py": BuildWithCardTemplate},
    include_package_data=True,
    install_requires=[
        "torch>=2.2,<2.15",
        "torchvision>=0.17,<0.30",
        "transformers>=5.0,<6",
        "peft>=0.13,<1",
        "accelerate>=1.0,<2",
        "datasets>=3.0,<6",
        "evaluate>=0.4,<0.5",
        "safetensors>=0.4",
        "huggingface-hub>=1.0,<3",
        "timm>=1.0,<2",
        "tokenizers>=0.20",
        "pydicom>=3.0,<4",
        "scikit-learn>=1.3",
        "numpy>=1.24",
        "pillow>=10",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "tensorboard>=2.14",
        "tqdm>=4.66",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6,<1"],
        "bench": ["open-clip-torch>=2.24", "psutil>=5.9"],
        "dicom-compressed": ["pylibjpeg>=2", "pylibjpeg-libjpeg>=2"],
        "app": ["gradio>=6,<7", "gradio_client>=2,<3"],  # examples/app (a Space); gradio 6 needs pillow < 13
        "quantization": ["bitsandbytes>=0.46,<1"],  # text_quantization (4-bit NF4/FP4 and 8-bit; CPU since 0.46)
    },
    entry_points={"console_scripts": ["cleft-accounting=cleft_hf.accounting:main"]},
)
