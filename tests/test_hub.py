"""Hub sharing, offline: the exact upload folder (full and adapter-only) loads back with and without cleft_hf and
gives the same learned-prompt scores; tokens never leak; bad input gives clear errors. Only `HfApi.create_repo` /
`HfApi.upload_folder` (the network) are replaced. The card's own content: tests/test_model_card.py."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path
import shutil
import textwrap

from conftest import run_isolated
import huggingface_hub
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import LocalTokenNotFoundError
from PIL import Image
import pytest
from safetensors.torch import load_file
from test_saving import _from_llm
import torch

from cleft_hf import CLEFTModel
from cleft_hf.arguments import ConfigError
from cleft_hf.hub import build_upload_folder, maybe_push_to_hub, push_to_hub
import cleft_hf.modeling

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["edema", "cardiomegaly", "pleural effusion"]
HUB_LLM_ID = "cleft-tests/tiny-llm"  # the base LLM id an adapter-only upload records, served from a fake Hub cache
FAKE_TOKEN = "hf_cleftTESTtoken0123456789abcdefXYZ"
MODELING_FILES = {p.name for p in Path(cleft_hf.modeling.__file__).parent.glob("*.py")} - {"__init__.py"}
UPLOAD_FILES = MODELING_FILES | {
    "README.md",
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
CLASS_NAMES = ["Atelectasis", "Cardiomegaly", "Edema"]
_ZERO_SHOT = [
    ("zero_shot", metric, CLASS_NAMES, {"prompts": prompts}, value)
    for prompts, metric, value in [
        ("hand", "accuracy", 0.4716666666666667),
        ("hand", "auroc", 0.6931234567),
        ("hand", "macro_f1", 0.41),
        ("learned", "accuracy", 0.5383333333333333),
        ("learned", "auroc", 0.74),
        ("learned", "macro_f1", float("nan")),
    ]
]
_PROBE = [("linear_probe", "accuracy", CLASS_NAMES, {"label_fraction": f}, v) for f, v in [(0.01, 0.39), (1.0, 0.61)]]
_RETRIEVAL = [("retrieval", "recall", None, {"k": 5, "direction": "mean"}, 0.037500000000000006)]
RESULTS = {
    "model": "outputs/stage2/model",
    "dataset": "chexpert",
    "task": "findings",
    "split": "test",
    "class_names": CLASS_NAMES,
    "n_images": 600,
    "n_train_images": 3000,
    "demo_llm_eval_perplexity": 17.3,
    "metrics": [
        dict(zip(("task", "metric", "classes", "setting", "value"), r)) for r in _ZERO_SHOT + _PROBE + _RETRIEVAL
    ],
}
# Independent expectation of the model-index: (task type, metric type, metric name, rounded value) per finite record.
EXPECTED_EVALS = {
    ("zero-shot-image-classification", "accuracy", "zero-shot accuracy, hand prompts", 0.4717),
    ("zero-shot-image-classification", "roc_auc", "zero-shot AUROC, hand prompts", 0.6931),
    ("zero-shot-image-classification", "f1", "zero-shot macro F1, hand prompts", 0.41),
    ("zero-shot-image-classification", "accuracy", "zero-shot accuracy, learned prompts", 0.5383),
    ("zero-shot-image-classification", "roc_auc", "zero-shot AUROC, learned prompts", 0.74),
    ("image-classification", "accuracy", "linear probe accuracy, 1 % of training labels", 0.39),
    ("image-classification", "accuracy", "linear probe accuracy, 100 % of training labels", 0.61),
    ("retrieval", "recall", "retrieval R@5 (mean of both directions)", 0.0375),
}
_LOAD_REMOTE = textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    images, scores = [Image.fromarray(image.numpy()) for image in torch.load(sys.argv[1])], {}
    for folder in sys.argv[3:]:
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        scores[folder] = model.zero_shot_classify(processor(images=images)["pixel_values"], use_learned_prompts=True)
        classifier = pipeline("zero-shot-image-classification", model=model, tokenizer=processor.tokenizer,
                              image_processor=processor.image_processor)  # the model card's snippet
        labels = model.config.class_names
        rows = classifier(images, candidate_labels=labels, hypothesis_template=model.config.prompt_template)
        scores[folder + ":pipeline"] = torch.tensor([[{r["label"]: r["score"] for r in row}[n] for n in labels]
                                                     for row in rows])
    assert "cleft_hf" not in sys.modules
    torch.save(scores, sys.argv[2])
    """
)


@pytest.fixture
def family():
    """The Hub code is family-independent (test_saving covers both): GPT-2, the paper's LLM family."""
    return "gpt2"


def _images() -> list[torch.Tensor]:
    """Grayscale uint8 images `(40, 48)`; both interpreters turn them into PIL images."""
    generator = torch.Generator().manual_seed(3)
    return [torch.randint(0, 256, (40, 48), generator=generator, dtype=torch.uint8) for _ in range(4)]


def _pixels(processor):
    return processor(images=[Image.fromarray(image.numpy()) for image in _images()])["pixel_values"]


def _learned_scores(model, processor):
    model.eval()
    return model.zero_shot_classify(_pixels(processor), use_learned_prompts=True)


def _with_prompts(model, processor):
    model.set_prompt_classes(CLASSES, processor)
    model.initialize_prompt_context(processor)
    with torch.no_grad():  # trained-looking context and adapter, so a lost one would show in the scores
        model.prompt_learner.ctx.add_(0.05 * torch.randn_like(model.prompt_learner.ctx))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    return model


def _fake_hub_cache(root: Path, llm_folder: Path) -> Path:
    """A Hugging Face cache holding `llm_folder` as the Hub repository HUB_LLM_ID (resolved offline)."""
    repo = root / ("models--" + HUB_LLM_ID.replace("/", "--"))
    commit = "0" * 40
    shutil.copytree(llm_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_upload_folder_loads_back_everywhere_with_same_learned_scores(model, processor, saved_llm, tmp_path):
    full_model = _with_prompts(model, processor)
    adapter_model = _with_prompts(_from_llm(saved_llm), processor)
    adapter_model.config.text_model_name_or_path = HUB_LLM_ID
    adapter_model.config.adapter_only_threshold = 10  # the model's own rule now says adapter-only
    expected = {"full": _learned_scores(full_model, processor), "adapter": _learned_scores(adapter_model, processor)}
    full = build_upload_folder(full_model, processor, tmp_path / "full", repo_id="me/cleft-full")
    adapter = build_upload_folder(adapter_model, processor, tmp_path / "adapter", repo_id="me/cleft-adapter")

    assert _files(full) == UPLOAD_FILES and _files(adapter) == UPLOAD_FILES
    assert not list(tmp_path.glob(".*partial*"))
    base_keys = set(adapter_model.base_llm_state_keys())
    assert set(full_model.base_llm_state_keys()) <= set(load_file(full / "model.safetensors"))
    adapter_weights = set(load_file(adapter / "model.safetensors"))
    assert not base_keys & adapter_weights and "prompt_sets._unnamed.ctx" in adapter_weights
    adapter_config = json.loads((adapter / "config.json").read_text())
    assert adapter_config["checkpoint_has_base_model"] is False
    assert adapter_config["text_model_name_or_path"] == HUB_LLM_ID
    assert adapter_config["prompt_sets"]["_unnamed"]["class_names"] == CLASSES
    assert adapter_config["auto_map"]["AutoModel"] == "modeling_cleft.CLEFTModel"
    card = ModelCard.load(adapter / "README.md")
    assert card.data.base_model == HUB_LLM_ID and "Adapter-only weights" in card.text
    assert "Full weights" in ModelCard.load(full / "README.md").text

    torch.testing.assert_close(
        _learned_scores(CLEFTModel.from_pretrained(full), processor), expected["full"], atol=1e-6, rtol=0
    )
    with pytest.raises(OSError, match=f"cannot load the base LLM '{HUB_LLM_ID}'"):
        CLEFTModel.from_pretrained(adapter)  # offline, and the default cache does not hold it
    loaded = CLEFTModel.from_pretrained(adapter, text_model_name_or_path=str(saved_llm))
    torch.testing.assert_close(_learned_scores(loaded, processor), expected["adapter"], atol=1e-6, rtol=0)

    torch.save(_images(), tmp_path / "images.pt")
    cache = _fake_hub_cache(tmp_path / "hub_cache", saved_llm)
    result = run_isolated(
        tmp_path,
        _LOAD_REMOTE,
        str(tmp_path / "images.pt"),
        str(tmp_path / "scores.pt"),
        str(full),
        str(adapter),
        env={"HF_HUB_CACHE": str(cache)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "scores.pt")
    # another interpreter: its BLAS may split the sums differently (seen 2.3e-6 on scaled logits)
    torch.testing.assert_close(remote[str(full)], expected["full"], atol=1e-5, rtol=0)
    torch.testing.assert_close(remote[str(adapter)], expected["adapter"], atol=1e-5, rtol=0)
    for folder, original in ((full, full_model), (adapter, adapter_model)):
        hand = original.zero_shot_classify(_pixels(processor), CLASSES, processor)
        torch.testing.assert_close(remote[f"{folder}:pipeline"], hand, atol=1e-5, rtol=1e-5)


class _Hub:
    """Stands in for the two network calls of HfApi; keeps a copy of what would have been uploaded."""

    def __init__(self, monkeypatch, copy_to: Path):
        self.calls, self.copy_to = [], copy_to
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", repo_id, kwargs, api.token))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(api, **kwargs):
            hub.calls.append(("upload_folder", kwargs["repo_id"], kwargs, api.token))
            shutil.copytree(kwargs["folder_path"], copy_to)
            return huggingface_hub.CommitInfo(
                commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123",
                commit_message="m",
                commit_description="",
                oid="abc123",
            )

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_to_hub_uploads_the_exact_folder_and_never_leaks_the_token(
    model, processor, tmp_path, monkeypatch, caplog, capsys
):
    _with_prompts(model, processor)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    hub = _Hub(monkeypatch, tmp_path / "uploaded")
    caplog.set_level(logging.DEBUG)
    url = push_to_hub(model, processor, "me/cleft-push", results=RESULTS, private=True)
    assert url == "https://huggingface.co/me/cleft-push/commit/abc123"
    (create, repo_id, create_kwargs, create_token), (upload, upload_id, upload_kwargs, upload_token) = hub.calls
    assert (create, repo_id, upload, upload_id) == ("create_repo", "me/cleft-push", "upload_folder", "me/cleft-push")
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert create_token == upload_token == FAKE_TOKEN  # resolved from HF_TOKEN, handed only to HfApi
    assert not Path(upload_kwargs["folder_path"]).exists()  # the temporary upload folder is cleaned up
    assert upload_kwargs["delete_patterns"] == ["*.safetensors", "*.safetensors.index.json"]
    assert _files(tmp_path / "uploaded") == UPLOAD_FILES
    assert ModelCard.load(tmp_path / "uploaded" / "README.md").data.eval_results
    for path in (tmp_path / "uploaded").iterdir():
        assert FAKE_TOKEN.encode() not in path.read_bytes(), path.name
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in caplog.text + captured.out + captured.err
    assert f"uploading {len(UPLOAD_FILES)} files" in caplog.text
    with pytest.raises(ValueError, match="token appears in README.md") as error:  # the last safety net
        push_to_hub(model, processor, "me/cleft-push", training_summary={"note": FAKE_TOKEN})
    assert FAKE_TOKEN not in str(error.value) and len(hub.calls) == 2


def test_bad_repo_id_and_missing_token(model, processor, tmp_path, monkeypatch):
    hub = _Hub(monkeypatch, tmp_path / "uploaded")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    for bad in ("not a repo id", "a/b/c", "me/name--with..dots", ""):
        with pytest.raises(ValueError, match="invalid Hub repo_id"):
            push_to_hub(model, processor, bad)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(LocalTokenNotFoundError, match="hf auth login.*HF_TOKEN"):
        push_to_hub(model, processor, "me/cleft-push")
    assert hub.calls == []


def test_upload_folder_is_atomic(model, processor, tmp_path, monkeypatch):
    target = tmp_path / "upload"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="upload"):
        build_upload_folder(model, processor, target)

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(processor), "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        build_upload_folder(model, processor, tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload"] and _files(target) == {"keep.txt"}
    monkeypatch.undo()
    build_upload_folder(model, processor, target, overwrite=True)
    assert _files(target) == UPLOAD_FILES and sorted(p.name for p in tmp_path.iterdir()) == ["upload"]


def test_maybe_push_to_hub_and_cli(model, processor, tmp_path, monkeypatch):
    _with_prompts(model, processor)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    hub = _Hub(monkeypatch, tmp_path / "uploaded")
    assert maybe_push_to_hub(argparse.Namespace(push_to_hub=False), model, processor) is None and hub.calls == []
    args = argparse.Namespace(
        push_to_hub=True, hub_model_id="me/cleft-stage2", dataset="chexpert", max_steps=8000, output_dir=str(tmp_path)
    )
    url = maybe_push_to_hub(args, str(tmp_path / "model"), results_path=tmp_path / "no_results.json")
    assert url.endswith("/commit/abc123") and [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    readme = (tmp_path / "uploaded" / "README.md").read_text()
    assert "| max_steps | 8000 |" in readme and "not evaluated" in readme and "hub_model_id" not in readme

    spec = importlib.util.spec_from_file_location("push_to_hub_cli", ROOT / "examples" / "push_to_hub.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    results = str(tmp_path / "results.json")

    def cli_main(*arguments: str):
        return cli.main(["--model_dir", str(tmp_path / "model"), "--hub_model_id", "me/cleft-cli", *arguments])

    built = Path(cli_main("--results", results, "--build_only", str(tmp_path / "cli_folder")))
    assert _files(built) == UPLOAD_FILES and "zero-shot accuracy, learned prompts" in (built / "README.md").read_text()
    # one results file per task (EMBED density and BI-RADS) and one arguments file per stage: all in the card
    (tmp_path / "other.json").write_text(json.dumps({**RESULTS, "task": "other"}))
    (tmp_path / "s1.yaml").write_text("stage: 1 (contrastive pretraining)\nmax_steps: 40000\n")
    (tmp_path / "s2.yaml").write_text("stage: 2 (context prompt learning)\nmax_steps: 8000\n")
    results_per_task = [results, str(tmp_path / "other.json")]
    summaries = [str(tmp_path / "s1.yaml"), str(tmp_path / "s2.yaml")]
    built = Path(
        cli_main(
            "--results", *results_per_task, "--training_summary", *summaries, "--build_only", str(tmp_path / "two")
        )
    )
    card = ModelCard.load(built / "README.md")
    assert {r.dataset_config for r in card.data.eval_results} == {"findings", "other"}
    assert len(card.data.eval_results) == 2 * len(EXPECTED_EVALS)
    assert card.text.index("| max_steps | 40000 |") < card.text.index("| max_steps | 8000 |")
    with pytest.raises(ConfigError, match="--results: file .*missing.json does not exist"):
        cli_main("--results", results, str(tmp_path / "missing.json"), "--build_only", str(tmp_path / "x"))
    with pytest.raises(ValueError, match="invalid Hub repo_id"):
        cli.main(["--model_dir", str(tmp_path / "model"), "--hub_model_id", "bad id"])
    assert len(hub.calls) == 2
