"""Shared fixtures: tokenizers trained on the fly, tiny CLEFT models, saved tiny LLMs (no network)."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import textwrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from tiny_models import TINY_VISION_MODEL, tiny_cleft_config, tiny_text_config, tiny_vision_kwargs
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cleft_hf import CLEFTImageProcessor, CLEFTModel, CLEFTProcessor
from cleft_hf.demo.language_model.tokenizer_training import train_tokenizer

FAMILIES = ("gpt2", "llama")
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "cleft_hf" / "demo" / "demo.yaml"
FINDINGS = ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural effusion"]
CORPUS = [
    f"{lead} {finding} {tail}"
    for lead in ("this is a chest x ray of a patient with", "findings consistent with", "there is no")
    for finding in FINDINGS
    for tail in ("in the right lower lobe.", "bilaterally.", "since the prior study.", ".")
]


# The longest test files, started first: with `pytest -n 2 --dist loadfile --no-loadscope-reorder` (`make test`;
# without the last flag xdist queues files by their number of tests instead) the two docs-run parts start at once
# on the two workers, which then work through the rest, instead of a long file starting last.
SLOW_FIRST = ("test_docs_run.py", "test_docs_run_standalone.py", "test_gpu_check.py", "test_slurm_recipe.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def loader_table_cache(tmp_path_factory):
    """Loader tables cached by the tests go to a temporary folder, not the user's datasets cache."""
    os.environ["CLEFT_HF_LOAD_CACHE"] = str(tmp_path_factory.mktemp("loader_table_cache"))


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    """Tokenizers trained with `tokenizers`, saved, to be loaded back through `AutoTokenizer`."""
    dirs = {}
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(f"tok_{family}")
        train_tokenizer(CORPUS, family=family, vocab_size=400).save_pretrained(path)
        dirs[family] = path
    return dirs


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tokenizer(tokenizer_dirs, family):
    return AutoTokenizer.from_pretrained(tokenizer_dirs[family])


@pytest.fixture
def processor(tokenizer):
    return CLEFTProcessor(CLEFTImageProcessor(size=32, crop_size=32), tokenizer, max_length=48)


@pytest.fixture
def make_model(family, tokenizer):
    def build(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return CLEFTModel(tiny_cleft_config(family, tokenizer, **overrides))

    return build


@pytest.fixture
def model(make_model):
    return make_model()


@pytest.fixture
def saved_llm(tmp_path, family, tokenizer):
    """A tiny causal LM saved with save_pretrained (safetensors), standing in for a Hub LLM id."""
    torch.manual_seed(1)
    lm = AutoModelForCausalLM.from_config(tiny_text_config(family, tokenizer))
    path = tmp_path / f"llm_{family}"
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def batch(processor):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(40, 48, generator=generator) for _ in range(3)]
    texts = [CORPUS[0], CORPUS[5] + " also a much longer report sentence here.", CORPUS[9]]
    return processor(text=texts, images=images)


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory):
    """A small MIMIC-CXR-like tree written by the demo data generator (real on-disk formats)."""
    from cleft_hf.demo.synthetic import write_demo_mimic_cxr

    root = tmp_path_factory.mktemp("mimic-demo")
    write_demo_mimic_cxr(root, n_studies=120, image_size=48, seed=0, n_test_per_class=4)
    return root


@pytest.fixture(scope="session")
def demo_llm(tmp_path_factory, demo_tree):
    """A tiny GPT-2 pretrained for a few steps on the demo reports, saved like a Hub LLM."""
    from cleft_hf.data import load_mimic_cxr
    from cleft_hf.demo.language_model import pretrain_causal_lm

    reports = load_mimic_cxr(demo_tree)["train"]["text"]
    result = pretrain_causal_lm(
        reports,
        tmp_path_factory.mktemp("demo-llm"),
        family="gpt2",
        vocab_size=300,
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        seq_len=64,
        batch_size=16,
        max_steps=5,
        append_eos=True,
        progress=False,
    )
    return result.path


@pytest.fixture(scope="session")
def embed_tree(tmp_path_factory):
    """A small EMBED-format tree (metadata + clinical tables, DICOMs) written by the demo generator."""
    from cleft_hf.demo.synthetic import write_demo_embed

    root = tmp_path_factory.mktemp("embed-demo")
    write_demo_embed(root, n_images=64, image_size=48, seed=0)
    return root


def _tiny_stage1(output: Path, overrides: dict) -> Path:
    from cleft_hf.arguments import load_arguments
    from cleft_hf.training.config import PretrainArguments
    from cleft_hf.training.contrastive_pretraining import run_pretraining

    run_pretraining(load_arguments(PretrainArguments, DEMO_CONFIG, overrides, section="pretrain"))
    return output / "model"


@pytest.fixture(scope="session")
def embed_stage1(tmp_path_factory, embed_tree, demo_tree, demo_llm):
    """A 2-step stage-1 model on `embed_tree` (density task)."""
    output = tmp_path_factory.mktemp("embed-stage1")
    return _tiny_stage1(
        output,
        {
            **tiny_run_overrides(demo_tree, demo_llm, output),
            "dataset": "embed",
            "data_root": str(embed_tree),
            "dataset_kwargs": {"task": "density"},
            "save_every": 0,
            "max_steps": 2,
        },
    )


@pytest.fixture(scope="session")
def cxr_stage1(tmp_path_factory, demo_tree, demo_llm):
    """A 2-step stage-1 model on `demo_tree` (MIMIC-CXR format, multi-label)."""
    output = tmp_path_factory.mktemp("cxr-stage1")
    return _tiny_stage1(output, {**tiny_run_overrides(demo_tree, demo_llm, output), "save_every": 0, "max_steps": 2})


def tiny_run_overrides(demo_tree, demo_llm, output_dir) -> dict:
    """Overrides making cleft_hf/demo/demo.yaml a seconds-long CPU run on the tiny demo tree."""
    return {
        "dataset": "synthetic",
        "data_root": str(demo_tree),
        "output_dir": str(output_dir),
        "report_to": "none",
        "per_device_batch_size": 8,
        "dataloader_num_workers": 0,
        "max_text_length": 48,
        "model_config": {
            "text_model_name_or_path": str(demo_llm),
            "image_size": 32,
            "projection_dim": 16,
            "vision_model_name": TINY_VISION_MODEL,  # the paper's tower family (ViT with registers), tiny
            "vision_model_kwargs": tiny_vision_kwargs(width=32, depth=1, reg_tokens=1),
        },
        "warmup_steps": 1,
        "max_steps": 4,
        "save_every": 2,
        "keep_last": 2,
        "log_every": 1,
        "eval_every": 0,
    }


_BLOCK_CLEFT_HF = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "cleft_hf" or name.startswith("cleft_hf."):
                raise ImportError("cleft_hf is blocked in this interpreter")
    sys.meta_path.insert(0, Block())
    """
)


def run_isolated(
    tmp_path: Path, code: str, *args, block_cleft_hf: bool = True, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run `code` as a script in a fresh interpreter: offline, its own HF_HOME, cwd `tmp_path`, `args` as argv.
    With `block_cleft_hf` the interpreter has a bare PATH-only environment and importing cleft_hf fails (a Hub
    user without the package); otherwise it inherits this session's environment."""
    script = tmp_path / "isolated.py"
    script.write_text((_BLOCK_CLEFT_HF if block_cleft_hf else "import sys\n") + textwrap.dedent(code))
    base = {"PATH": "/usr/bin:/bin"} if block_cleft_hf else dict(os.environ)
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**base, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), **(env or {})},
    )
