"""The README's and docs' commands, checked statically (`tests/test_docs_run.py` runs them on demo data)."""

from __future__ import annotations

import importlib.util
import shlex

from docs_commands import DOCUMENTS, REPO, commands, inline_commands, script_of, twins
import pytest

from cleft_hf.arguments import make_parser, read_config_file

ENTRY_CLASSES = {
    "examples/pretrain.py": ("cleft_hf.training.config", "PretrainArguments", "pretrain"),
    "examples/prompt_tune.py": ("cleft_hf.training.config", "PromptTuneArguments", "prompt_tune"),
    "examples/evaluate.py": ("cleft_hf.evaluation.arguments", "EvaluateArguments", "evaluate"),
    "examples/push_to_hub.py": (str(REPO / "examples" / "push_to_hub.py"), "PushArguments", None),
}
MODULE_ENTRY_CLASSES = {
    "cleft_hf.convert_original_checkpoint": ("cleft_hf.convert_original_checkpoint", "ConvertArguments")
}
ALL = [(document.name, command) for document in DOCUMENTS for command in commands(document)]


def _arguments_class(script: str):
    module_name, class_name, section = ENTRY_CLASSES[script]
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("docs_entry", module_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    return getattr(module, class_name), section


def test_the_readme_lists_the_commands_a_user_runs():
    scripts = {script_of(command) for _, command in ALL}
    assert {
        "make demo",
        "examples/pretrain.py",
        "examples/prompt_tune.py",
        "examples/evaluate.py",
        "examples/push_to_hub.py",
    } <= scripts


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_real_data_command_has_a_demo_twin(document):
    for command, found in twins(document).items():
        assert found, f"{document.name}: `{command}` has no demo twin (same script on the demo data)"


@pytest.mark.parametrize("name, command", ALL)
def test_every_command_parses(name, command):
    script = script_of(command)
    if script.startswith("make "):
        assert f"\n{script.split()[1]}:" in (REPO / "Makefile").read_text(), f"no Makefile target for `{command}`"
        return
    words = shlex.split(command)
    if script == "python -c":
        compile(words[2], "<README>", "exec")
        return
    if not script.endswith(".py"):  # python -m <module>
        assert importlib.util.find_spec(script) is not None, f"{name}: `{command}` runs a missing module"
        if script in MODULE_ENTRY_CLASSES:
            module, class_name = MODULE_ENTRY_CLASSES[script]
            cls = getattr(importlib.import_module(module), class_name)
            _, unknown = make_parser(cls, {}, config_file=False).parse_known_args(words[words.index(script) + 1 :])
            assert not unknown, f"{name}: `{command}`: unknown arguments {unknown}"
        return
    assert (REPO / script).is_file(), f"{name}: `{command}` runs a missing script"
    cls, section = _arguments_class(script)
    argv = words[words.index(script) + 1 :]
    defaults = {}
    if section is not None and "--config" in argv:
        config = REPO / argv[argv.index("--config") + 1]
        assert config.is_file(), f"{name}: `{command}`: no {config}"
        defaults = read_config_file(config, section)
    _, unknown = make_parser(cls, defaults, config_file=section is not None).parse_known_args(argv)
    assert not unknown, f"{name}: `{command}`: unknown arguments {unknown}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_inline_commands_name_existing_scripts(document):
    for command in inline_commands(document):
        script = script_of(command)
        exists = (REPO / script).is_file() if script.endswith(".py") else importlib.util.find_spec(script) is not None
        assert exists, f"{document.name}: `{command}`"
