"""Every command of README.md and docs/ runs on demo data (`make docs-check`), and the small `make demo` among them
writes both modalities' outputs as the README describes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from docs_commands import run_all
from huggingface_hub import ModelCard
import pytest

from cleft_hf import CLEFTModel

MAMMO_KEYS = (
    "density_zero_shot_acc_hand_prompts",
    "density_zero_shot_acc_learned_prompts",
    "density_linear_probe_acc",
    "birads_zero_shot_acc_learned_prompts",
    "birads_linear_probe_acc",
    "birads_linear_probe_balanced_acc",
)
STAGES = (
    "data",
    "language_model",
    "cxr_stage1",
    "cxr_stage2",
    "cxr_evaluation",
    "mammo_stage1",
    "mammo_stage2_density",
    "mammo_stage2_birads",
    "mammo_evaluation_density",
    "mammo_evaluation_birads",
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The commands of README.md and docs/ that read what `make demo` wrote, `make demo` first, in a fresh folder
    (the others: tests/test_docs_run_standalone.py; `make docs-check` runs both parts)."""
    folder = tmp_path_factory.mktemp("docs")
    ran = run_all(folder, part="demo")
    return folder, ran


@pytest.fixture(scope="module")
def demo_dir(sandbox):
    return sandbox[0] / "outputs" / "demo"  # `make demo` at the small size, the README's first command


def test_every_documented_command_runs(sandbox):
    assert sandbox[1] >= 17


def test_demo_writes_both_modalities_results(demo_dir):
    cxr = json.loads((demo_dir / "results.json").read_text())
    mammo = json.loads((demo_dir / "mammo" / "results.json").read_text())
    assert cxr["dataset"] == "synthetic" and cxr["metrics"]
    for key in MAMMO_KEYS:
        assert 0.0 <= mammo[key] <= 1.0, key
    assert mammo["density"]["task"] == "density" and mammo["birads"]["task"] == "birads"
    assert len(mammo["birads"]["class_names"]) == 7 and len(mammo["density"]["class_names"]) == 4
    for results in (cxr, mammo):
        assert set(STAGES) <= set(results["demo_seconds"]) and results["demo_seconds"]["total"] > 0
    assert (demo_dir / "mammo" / "density" / "results.md").is_file()
    assert (demo_dir / "mammo" / "birads" / "results.md").is_file()
    for modality in ("cxr", "mammo"):  # one similarity-map figure per modality
        assert (demo_dir / "plots" / f"similarity_maps_{modality}.png").stat().st_size > 5000, modality


def test_demo_mammography_model_carries_both_prompt_sets(demo_dir):
    model = CLEFTModel.from_pretrained(demo_dir / "mammo" / "model")
    assert {"density", "birads"} <= set(model.prompt_set_names())
    assert "chest" not in model.config.prompt_template and model.config.modality == "mammography"
    card = ModelCard.load(demo_dir / "mammo" / "model" / "README.md")
    assert "mammography" in card.data.tags and "chest-x-ray" not in card.data.tags
    assert "chest x ray" not in card.text.lower()
    configs = {result.dataset_config for result in card.data.eval_results}
    assert configs == {"density", "birads"}, configs
    assert "task `density`" in card.text and "task `birads`" in card.text
    for title in (
        "Stage 1 (contrastive pretraining)",
        "Stage 2 (context prompt learning, density)",
        "Stage 2 (context prompt learning, birads)",
    ):  # every stage's recipe, recorded by the runs
        assert f"### {title}" in card.text, title
    log = json.loads((demo_dir / "mammo" / "model" / "training_log.json").read_text())
    assert [n for n in log if n.startswith("stage")] == [
        "stage 1 (contrastive)",
        "stage 2 (prompts, density)",
        "stage 2 (prompts, birads)",
    ]


def test_demo_mammography_model_loads_as_remote_code(demo_dir):
    code = (
        "import sys, torch; from transformers import AutoModel; "
        "sys.modules['cleft_hf'] = None; "  # without our package
        f"m = AutoModel.from_pretrained({str(demo_dir / 'mammo' / 'model')!r}, trust_remote_code=True); "
        "print(sorted(n for n in m.prompt_set_names() if n))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=demo_dir, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['birads', 'density']"


def test_demo_compare_measures_both_models(demo_dir):
    """`python -m cleft_hf.demo.compare` (a README command) after the small `make demo`."""
    record = json.loads((demo_dir / "compare" / "comparison.json").read_text())
    cleft, bert = record["columns"]["CLEFT (demo LLM + LoRA)"], record["columns"]["BERT CLIP baseline"]
    for column in (cleft, bert):
        assert column["trainable_params"] > 0 and column["step_s"] > 0 and column["peak_rss_gb"] > 0
        for key in ("density_zero_shot_acc_hand_prompts", "birads_linear_probe_acc"):
            assert 0.0 <= column[key] <= 1.0, key
    assert bert["trainable_params"] > cleft["trainable_params"]  # the whole BERT trains, only LoRA in CLEFT
    model = CLEFTModel.from_pretrained(demo_dir / "compare" / "stage1" / "model")
    assert model.config.text_is_encoder and model.config.text_tower_trained
    assert (demo_dir / "compare" / "comparison.md").read_text().startswith("| | CLEFT")
