"""Nothing lost, nothing silently wrong in a run: numeric arguments checked, weights finite whenever anything is
saved, a full disk or a SIGTERM during the final save, evaluations holding their output folder and writing
atomically, classes without test images reported."""

from __future__ import annotations

import json
import signal
import types

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_training import DEMO_CONFIG, _pretrain_args
import torch
import transformers.modeling_utils

from cleft_hf import CLEFTModel
from cleft_hf.arguments import ConfigError, load_arguments, parse_arguments
from cleft_hf.cli import user_error_message
from cleft_hf.evaluation import runner as evaluation_runner
from cleft_hf.evaluation.arguments import EvaluateArguments
from cleft_hf.evaluation.runner import classification_metrics, run_evaluation
from cleft_hf.run_lock import LOCK_FILE, OutputDirInUseError, RunLock
from cleft_hf.training import runner
from cleft_hf.training.checkpointing import list_checkpoints
from cleft_hf.training.config import PretrainArguments
from cleft_hf.training.contrastive_pretraining import run_pretraining

DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning_rate", "inf"], "config field 'learning_rate' must be a finite number, got inf"),
        (["--max_grad_norm", "nan"], "config field 'max_grad_norm' must be a finite number, got nan"),
        (["--weight_decay", "nan"], "config field 'weight_decay' must be a finite number, got nan"),
        (["--weight_decay", "-0.1"], "config field 'weight_decay' must be >= 0, got -0.1"),
        (["--momentum", "1.5"], "config field 'momentum' must be in [0, 1), got 1.5"),
        (["--betas", "0.9", "nan"], "config field 'betas' must be a finite number, got [0.9, nan]"),
        (["--label_caption_prob", "2"], "config field 'label_caption_prob' must be in [0, 1], got 2.0"),
    ],
)
def test_numeric_arguments_are_finite_in_range_and_named_one_at_a_time(tmp_path, argv, message):
    with pytest.raises(ConfigError) as raised:
        parse_arguments(
            PretrainArguments, ["--config", str(DEMO_CONFIG), "--data_root", str(tmp_path), *argv], section="pretrain"
        )
    assert str(raised.value) == message


# ------------------------------------------------------------------------------------------------ finite weights
def _poison_second_step(monkeypatch):
    """The optimiser's 2nd step leaves a NaN in a trainable tensor (as an overflowing update would)."""
    build = runner.build_optimizer

    def build_poisoned(*args, **kwargs):
        optimizer = build(*args, **kwargs)
        step, calls = optimizer.step, []

        def poisoned_step(self, *step_args, **step_kwargs):
            result = step(*step_args, **step_kwargs)
            calls.append(1)
            if len(calls) == 2:
                with torch.no_grad():
                    optimizer.param_groups[0]["params"][0].view(-1)[0] = float("nan")
            return result

        optimizer.step = types.MethodType(poisoned_step, optimizer)  # a method, as the LR scheduler expects
        return optimizer

    monkeypatch.setattr(runner, "build_optimizer", build_poisoned)


def test_non_finite_weights_stop_the_run_before_anything_is_saved(tmp_path, demo_tree, demo_llm, monkeypatch):
    _poison_second_step(monkeypatch)
    with pytest.raises(RuntimeError, match="non-finite weights after the optimiser step of step 2") as raised:
        run_pretraining(_pretrain_args(demo_tree, demo_llm, tmp_path, max_steps=3, save_every=1))
    assert "checkpoints/step_1" in str(raised.value) and user_error_message(raised.value) is not None
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1] and not (tmp_path / "model").exists()
    weights = load_file(tmp_path / "checkpoints" / "step_1" / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


# ------------------------------------------------------------------------------------------------ final save
def test_full_disk_at_the_final_save_keeps_the_state_and_says_how_to_finish(
    tmp_path, demo_tree, demo_llm, monkeypatch
):
    def disk_full(*args, **kwargs):
        raise SafetensorError(DISK_FULL)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)
    with pytest.raises(OSError) as raised:  # one line for the CLI, not a SafetensorError traceback
        run_pretraining(_pretrain_args(demo_tree, demo_llm, tmp_path, save_every=0))
    message = str(raised.value)
    assert message.startswith(f"no space left for the model folder {tmp_path / 'model'}") and "\n" not in message
    assert "checkpoints/step_4" in message and "--resume_from_checkpoint latest" in message, message
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".model.partial-*"))
    assert not (tmp_path / LOCK_FILE).exists()
    monkeypatch.undo()  # space freed: the same command with --resume_from_checkpoint latest writes the model
    summary = run_pretraining(
        _pretrain_args(demo_tree, demo_llm, tmp_path, save_every=0, resume_from_checkpoint="latest")
    )
    kept = load_file(tmp_path / "checkpoints" / "step_4" / "model.safetensors")
    model = CLEFTModel.from_pretrained(summary["model_dir"])
    assert torch.equal(model.visual_projection.weight, kept["visual_projection.weight"])


def test_sigterm_during_the_final_save_finishes_it_then_stops(tmp_path, demo_tree, demo_llm, monkeypatch):
    save = transformers.modeling_utils.safe_save_file

    def save_while_signalled(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)  # pre-emption in the middle of writing model/
        return save(*args, **kwargs)

    def killed(signum, frame):  # what an unhandled SIGTERM would do to the process, as an exception here
        raise RuntimeError("the process would have been killed by SIGTERM")

    previous = signal.signal(signal.SIGTERM, killed)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_while_signalled)
    try:
        with pytest.raises(SystemExit) as raised:
            run_pretraining(_pretrain_args(demo_tree, demo_llm, tmp_path, save_every=0))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert raised.value.code == 128 + signal.SIGTERM
    assert CLEFTModel.from_pretrained(tmp_path / "model") is not None  # complete, to the last byte
    assert not list(tmp_path.glob(".model.partial-*")) and not (tmp_path / LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------ evaluation
def _model_folder(make_model, processor, folder, seed):
    make_model(seed=seed).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _evaluate_args(demo_tree, model_dir, output_dir):
    return load_arguments(
        EvaluateArguments,
        DEMO_CONFIG,
        {
            "dataset": "synthetic",
            "data_root": str(demo_tree),
            "output_dir": str(output_dir),
            "tasks": ["zero_shot"],
            "model_name_or_path": str(model_dir),
            "per_device_batch_size": 16,
            "dataloader_num_workers": 0,
        },
        section="evaluate",
    )


@pytest.mark.parametrize("family", ["gpt2"])
def test_evaluation_holds_its_output_dir(tmp_path, demo_tree, make_model, processor):
    model_dir = _model_folder(make_model, processor, tmp_path / "model", seed=0)
    holder = RunLock(tmp_path / "eval").acquire()  # another evaluation (or training) writing there
    try:
        with pytest.raises(OutputDirInUseError, match="is in use by another run"):
            run_evaluation(_evaluate_args(demo_tree, model_dir, tmp_path / "eval"))
    finally:
        holder.release()
    assert not (tmp_path / "eval" / "results.json").exists()


@pytest.mark.parametrize("family", ["gpt2"])
def test_evaluation_results_never_mix_two_runs_and_report_classes_without_images(
    tmp_path, demo_tree, make_model, processor, monkeypatch, caplog
):
    split = evaluation_runner.single_label_split

    def without_the_last_class(dataset, spec, task, class_names=None, *args, **kwargs):
        subset, names = split(dataset, spec, task, class_names, *args, **kwargs)
        keep = [i for i, label in enumerate(subset["labels"]) if label != len(names) - 1]
        return subset.select(keep), names

    monkeypatch.setattr(evaluation_runner, "single_label_split", without_the_last_class)
    output = tmp_path / "eval"
    first_model = _model_folder(make_model, processor, tmp_path / "a", 0)
    results = run_evaluation(_evaluate_args(demo_tree, first_model, output))
    missing = results["class_names"][-1]
    assert results["classes_without_examples"] == [missing] and f"no test images of class {missing}" in caplog.text
    records = {record["metric"]: record for record in results["metrics"]}
    assert records["accuracy"]["classes"] == results["class_names"]
    assert records["macro_f1"]["classes"] == records["auroc"]["classes"] == results["class_names"][:-1]
    first = {path.name: path.read_bytes() for path in [output / "results.json", *(output / "plots").iterdir()]}

    def crash(*args, **kwargs):  # the second evaluation dies after its ROC plot, before its confusion matrix
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(evaluation_runner, "plot_confusion_matrix", crash)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        run_evaluation(_evaluate_args(demo_tree, _model_folder(make_model, processor, tmp_path / "b", 1), output))
    assert {path.name: path.read_bytes() for path in [output / "results.json", *(output / "plots").iterdir()]} == first
    assert sorted(path.name for path in output.iterdir()) == ["plots", "results.json", "results.md"]


def test_macro_metrics_name_the_classes_they_average_over():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    metrics = classification_metrics(probabilities, np.array([0, 1, 0, 1]), ["a", "b", "c"])
    assert metrics["accuracy"] == (1.0, ["a", "b", "c"])
    assert metrics["macro_f1"] == (1.0, ["a", "b"]) and metrics["auroc"] == (1.0, ["a", "b"])
    assert json.dumps(metrics)


# ------------------------------------------------------------------------------------------------ smaller cases
@pytest.mark.parametrize("family", ["gpt2"])
def test_upload_folder_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, model, processor, monkeypatch):
    from cleft_hf import model_folder_write
    from cleft_hf.hub import build_upload_folder

    class Usage:
        free = 1000

    monkeypatch.setattr(model_folder_write.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(OSError, match=r"^no space left for the upload folder .*upload: it needs ~.* 1 kB free;"):
        build_upload_folder(model, processor, tmp_path / "upload", repo_id="me/cleft")
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_completion_marker_of_the_wrong_shape_is_one_line(tmp_path):
    from test_training_utils import _train

    from cleft_hf.training.checkpoint_files import COMPLETE_MARKER, CheckpointError

    _train(tmp_path / "run", steps=2, save_every=2)
    (tmp_path / "run" / "checkpoints" / "step_2" / COMPLETE_MARKER).write_text("[]")  # valid JSON, wrong shape
    with pytest.raises(CheckpointError, match=r"checkpoint_complete\.json is not a completion marker"):
        _train(tmp_path / "run", steps=4, save_every=2, resume="latest")
