"""Run arguments (HfArgumentParser + YAML sections) and the entry scripts' one-line user errors."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest
from stage_worker import launch_arguments
import yaml

from cleft_hf.arguments import ConfigError, load_arguments, parse_arguments, save_arguments
from cleft_hf.evaluation.arguments import EvaluateArguments
from cleft_hf.training.config import PretrainArguments, PromptTuneArguments

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "examples" / "configs"
DEMO_CONFIG = REPO / "cleft_hf" / "demo" / "demo.yaml"
ENTRY_POINTS = {  # command line of every entry point, run as a user would
    "pretrain": [str(REPO / "examples" / "pretrain.py")],
    "prompt_tune": [str(REPO / "examples" / "prompt_tune.py")],
    "evaluate": [str(REPO / "examples" / "evaluate.py")],
    "push_to_hub": [str(REPO / "examples" / "push_to_hub.py")],
    "accounting": ["-m", "cleft_hf.accounting"],
    "demo": ["-m", "cleft_hf.demo"],
}


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300
    )


# ------------------------------------------------------------------------------------------------ parsing
def test_yaml_section_then_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "common": {"data_root": str(tmp_path), "seed": 3},
                "pretrain": {
                    "max_steps": 200,
                    "warmup_steps": 20,
                    "learning_rate": "4e-5",
                    "betas": [0.9, 0.98],
                    "model_config": {"image_size": 64, "projection_dim": 32},
                    "output_dir": str(tmp_path / "run"),
                },
                "evaluate": {"max_steps": "not a pretrain field"},
            }
        )
    )
    argv = ["--config", str(config), "--max_steps=300", "--per_device_batch_size", "8",
            "--gradient_checkpointing", "false", "--betas", "0.8", "0.9", "--push_to_hub",
            "--hub_model_id", "me/cleft", "--min_lr_ratio", "0.1", "--model_config", "{image_size: 32}",
            "--augmentation", "{hflip: true, scale: [0.8, 1.0]}"]  # fmt: skip
    arguments = parse_arguments(PretrainArguments, argv, section="pretrain")
    assert arguments.max_steps == 300 and arguments.warmup_steps == 20 and arguments.learning_rate == 4e-5
    assert arguments.seed == 3 and arguments.per_device_batch_size == 8 and arguments.gradient_checkpointing is False
    assert arguments.betas == [0.8, 0.9] and arguments.push_to_hub is True
    assert arguments.model_config == {"image_size": 32, "projection_dim": 32}  # updated key by key
    assert arguments.model_field("image_size") == 32 and arguments.model_field("vision_model_name").startswith("vit_")
    assert arguments.augmentation == {"hflip": True, "scale": [0.8, 1.0]}
    saved = save_arguments(arguments, tmp_path / "resolved.yaml")
    assert load_arguments(PretrainArguments, saved) == arguments


def test_defaults_follow_the_recipes_and_cleft_config(tmp_path):
    from cleft_hf import CLEFTConfig

    stage1 = PretrainArguments(data_root=str(tmp_path))
    assert (stage1.optimizer, stage1.learning_rate, stage1.weight_decay, stage1.warmup_steps, stage1.max_steps) == (
        "adamw", 4e-5, 0.1, 4000, 40000,
    )  # fmt: skip
    assert stage1.model_config == {} and stage1.model_field("projection_dim") == CLEFTConfig().projection_dim
    stage2 = PromptTuneArguments(data_root=str(tmp_path), model_name_or_path="outputs/stage1")
    assert (stage2.optimizer, stage2.learning_rate, stage2.min_lr_ratio, stage2.weight_decay) == (
        "sgd",
        1e-4,
        0.1,
        1e-3,
    )
    assert (stage2.warmup_steps, stage2.max_steps, stage2.num_context_tokens) == (100, 8000, 30)
    assert EvaluateArguments(data_root=str(tmp_path), model_name_or_path="m").retrieval_ks == [1, 5, 10]
    adalora = PretrainArguments(
        data_root=str(tmp_path),
        max_steps=50,
        warmup_steps=5,
        model_config={"peft_config": {"peft_type": "ADALORA", "init_r": 8, "target_r": 4}},
    )
    assert adalora.model_config["peft_config"]["total_step"] == 50  # AdaLoRA's budget follows max_steps


def test_unknown_keys_name_the_closest_fields(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"unknown config key 'learning_rat' \(from --learning_rat\); did you mean "
        r"learning_rate",
    ):
        parse_arguments(PretrainArguments, ["--data_root", str(tmp_path), "--learning_rat", "1e-4"])
    config = tmp_path / "bad.yaml"
    config.write_text("max_step: 10\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'max_step' \(in .*bad.yaml\); did you mean max_steps"):
        load_arguments(PretrainArguments, config)
    with pytest.raises(ConfigError, match=r"'image_size' .* is a model field: put it under model_config"):
        load_arguments(PretrainArguments, None, {"data_root": str(tmp_path), "image_size": 64})
    with pytest.raises(
        ConfigError, match=r"unknown config key 'imge_size' \(in model_config.*did you mean image_size"
    ):
        parse_arguments(PretrainArguments, ["--data_root", str(tmp_path), "--model_config", "{imge_size: 3}"])


@pytest.mark.parametrize(
    "cls, argv, message",
    [
        (PretrainArguments, ["--max_steps", "ten"], r"argument --max_steps/--max-steps: invalid int value: 'ten'"),
        (
            PromptTuneArguments,
            ["--model_name_or_path", "m", "--loss", "siglip"],
            "argument --loss: invalid choice: 'siglip'",
        ),
        (PretrainArguments, ["--augmentation", "[1, 2]"], "'augmentation' expects a mapping"),
        (PretrainArguments, ["--betas", "0.9"], "'betas' takes 2 values"),
        (PretrainArguments, ["--max_steps", "10"], r"'warmup_steps' must be in \[0, max_steps=10\]"),
        (PretrainArguments, ["--model_config", "{image_pooling: max}"], "'model_config': image_pooling must be"),
        (EvaluateArguments, [], "'model_name_or_path' .* is required"),
        (PretrainArguments, ["--push_to_hub"], "'hub_model_id' is required"),
    ],
)
def test_bad_values_name_the_field(tmp_path, cls, argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_arguments(cls, ["--data_root", str(tmp_path), *argv])


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'data_root': folder .*missing does not exist"):
        parse_arguments(PretrainArguments, ["--data_root", str(tmp_path / "missing")])
    with pytest.raises(ConfigError, match="'data_root' is required"):
        parse_arguments(PretrainArguments, [])
    with pytest.raises(ConfigError, match="config file .*none.yaml does not exist"):
        parse_arguments(PretrainArguments, ["--config", str(tmp_path / "none.yaml")])


def test_help_shows_fields_with_the_files_defaults(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_arguments(PromptTuneArguments, ["--config", str(DEMO_CONFIG), "--help"], section="prompt_tune")
    assert stopped.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert (
        "--num-context-tokens NUM_CONTEXT_TOKENS Learned context tokens placed before the class name. (default: 8)"
        in shown
    )  # the demo file's value
    assert "--resume_from_checkpoint" in shown and "--config PATH" in shown


@pytest.mark.parametrize("name", ["demo", "cxr_paper", "embed_paper"])
def test_example_configs_parse_for_every_entry_script(name, tmp_path):
    for cls, section in (
        (PretrainArguments, "pretrain"),
        (PromptTuneArguments, "prompt_tune"),
        (EvaluateArguments, "evaluate"),
    ):
        path = DEMO_CONFIG if name == "demo" else CONFIGS / f"{name}.yaml"
        args = load_arguments(cls, path, {"data_root": str(tmp_path)}, section=section)
        assert args.output_dir and (name != "demo" or args.output_dir.startswith("outputs/demo-run/"))


# ------------------------------------------------------------------------------------------------ entry points
@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_answers_without_importing_torch(name, tmp_path):
    # Run from elsewhere (examples/evaluate.py must not shadow the `evaluate` library); -h imports no torch.
    probe = (
        "import runpy, sys; sys.argv = [sys.argv[1], '-h']\n"
        "try:\n    runpy.run_module(sys.argv[0][3:], run_name='__main__') if sys.argv[0].startswith('-m ') "
        "else runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as stop:\n    code = stop.code\n"
        "print('torch imported:', 'torch' in sys.modules, 'exit', code)"
    )
    target = ENTRY_POINTS[name][-1] if ENTRY_POINTS[name][0] != "-m" else "-m " + ENTRY_POINTS[name][1]
    done = _run(["-c", probe, target], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--debug" in done.stdout and done.stdout.strip().endswith("torch imported: False exit 0")


@pytest.mark.parametrize("linked", [False, True], ids=["repository", "linked-folder"])
def test_scripts_of_examples_import_the_evaluate_library(tmp_path, linked):
    # Run as a script, examples/ is sys.path[0] (links resolved): examples/evaluate.py must not shadow
    # `evaluate` (the metrics), also when the script is reached through a linked folder (as docs-check does).
    script = Path(ENTRY_POINTS["pretrain"][0])
    if linked:
        (tmp_path / "examples").symlink_to(script.resolve().parent)
        script = tmp_path / "examples" / script.name
    probe = (
        "import os, sys; sys.argv = [sys.argv[1]]; sys.path.insert(0, os.path.dirname(os.path.realpath(sys.argv[0])))\n"
        "from cleft_hf.cli import run_cli\n"
        "print(run_cli(lambda argv: __import__('evaluate').load.__module__))"
    )
    done = _run(["-c", probe, str(script)], tmp_path)
    assert done.returncode == 0 and done.stdout.strip().startswith("evaluate."), done.stderr[-2000:]


@pytest.mark.parametrize(
    "name, argv, message",
    [
        (
            "pretrain",
            ["--config", str(DEMO_CONFIG), "--learning_rat", "0.1"],
            "unknown config key 'learning_rat' (from --learning_rat); did you mean learning_rate?",
        ),
        (
            "pretrain",
            ["--config", str(DEMO_CONFIG), "--data_root", "nowhere"],
            "config field 'data_root': folder nowhere does not exist",
        ),
        (
            "prompt_tune",
            ["--config", str(DEMO_CONFIG), "--data_root", ".", "--model_name_or_path", "/no/model"],
            "config field 'model_name_or_path': folder /no/model does not exist",
        ),
        (
            "evaluate",
            ["--config", str(DEMO_CONFIG), "--data_root", ".", "--model_name_or_path", "no/model"],
            "config field 'model_name_or_path': 'no/model' is neither a local folder nor a Hub model in the cache",
        ),
        (
            "pretrain",
            [
                "--config",
                str(DEMO_CONFIG),
                "--data_root",
                ".",
                "--model_config",
                "{text_model_name_or_path: nowhere/llm}",
            ],
            "'model_config.text_model_name_or_path'",
        ),
        (
            "push_to_hub",
            ["--model_dir", "nowhere", "--hub_model_id", "me/cleft"],
            "--model_dir nowhere is not a saved",
        ),
        ("accounting", ["--baseline_bert_layers", "0"], "--baseline_bert_layers must be in [1, 12]"),
    ],
)
def test_user_errors_end_in_one_line_with_exit_code_2(name, argv, message, tmp_path):
    done = _run([*ENTRY_POINTS[name], *argv], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"] and message in done.stderr


@pytest.mark.parametrize(
    "name, argv",
    [
        ("pretrain", ["--config", str(DEMO_CONFIG), "--data_root", "nowhere"]),
        ("prompt_tune", ["--config", str(DEMO_CONFIG), "--data_root", ".", "--model_name_or_path", "/no/model"]),
        ("evaluate", ["--config", str(DEMO_CONFIG), "--data_root", ".", "--model_name_or_path", "no/model"]),
        ("push_to_hub", ["--model_dir", "nowhere", "--hub_model_id", "me/cleft"]),
        ("accounting", ["--baseline_bert_layers", "0"]),
    ],
)
def test_debug_shows_the_traceback_of_a_user_error(name, argv, tmp_path):
    debug = _run([*ENTRY_POINTS[name], *argv, "--debug"], tmp_path)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_a_missing_data_folder_is_named_before_torch_is_imported(tmp_path):
    probe = (
        "import sys; from cleft_hf.arguments import ConfigError, parse_arguments\n"
        "from cleft_hf.training.config import PretrainArguments\n"
        f"try: parse_arguments(PretrainArguments, ['--config', {str(DEMO_CONFIG)!r}, '--data_root', 'nowhere'], "
        "section='pretrain')\n"
        "except ConfigError as error: print(error, 'torch' in sys.modules)"
    )
    done = _run(["-c", probe], tmp_path)
    assert done.stdout.strip() == "config field 'data_root': folder nowhere does not exist False", done.stderr


def test_push_to_hub_checks_the_token_before_training(tmp_path):
    argv = [
        "--config",
        str(DEMO_CONFIG),
        "--data_root",
        ".",
        "--model_config",
        f"{{text_model_name_or_path: {tmp_path}}}",
        "--push_to_hub",
        "--hub_model_id",
        "me/cleft",
    ]
    (tmp_path / "config.json").write_text("{}")
    offline = _run([*ENTRY_POINTS["pretrain"], *argv], tmp_path)
    assert offline.returncode == 2 and "push_to_hub needs the Hub but HF_HUB_OFFLINE=1" in offline.stderr
    no_token = _run(
        [*ENTRY_POINTS["pretrain"], *argv],
        tmp_path,
        HF_HUB_OFFLINE="0",
        HF_TOKEN="",
        HF_HOME=str(tmp_path / "hf_home"),
    )
    assert no_token.returncode == 2 and "no Hugging Face token found" in no_token.stderr
    unreachable = _run(
        [*ENTRY_POINTS["pretrain"], *argv],
        tmp_path,
        HF_HUB_OFFLINE="0",
        HF_TOKEN="hf_fake",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HOME=str(tmp_path / "hf_home"),
    )
    assert unreachable.returncode == 2 and len(unreachable.stderr.strip().splitlines()) == 1
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in unreachable.stderr
    assert not (tmp_path / "outputs").exists()  # nothing trained or written


@pytest.mark.parametrize("processes", [["--cpu", "--num_processes", "1"], ["--multi_gpu", "--num_processes", "2"]])
def test_error_printed_once_under_accelerate_launch(processes, tmp_path):
    command = launch_arguments(
        "--quiet",
        *processes,
        "--num_machines",
        "1",
        *ENTRY_POINTS["pretrain"],
        "--config",
        str(DEMO_CONFIG),
        "--data_root",
        "nowhere",
    )
    done = _run(command, tmp_path, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    assert done.returncode != 0
    assert done.stderr.count("error: config field 'data_root': folder nowhere does not exist") == 1
    if processes[0] == "--cpu":  # torchrun (several processes) prints its own ChildFailedError summary
        assert "Traceback" not in done.stderr
