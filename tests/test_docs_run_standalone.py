"""The documented commands that need nothing of `make demo` (tests/docs_commands.py `standalone`) run in a sandbox
of their own, beside tests/test_docs_run.py on the other pytest worker."""

from __future__ import annotations

import json

from docs_commands import DOCUMENTS, commands, in_part, inline_commands, run_all


def test_every_command_is_in_one_part_and_the_standalone_part_runs(tmp_path):
    listed = [command for document in DOCUMENTS for command in commands(document) + inline_commands(document)]
    standalone = [command for command in listed if in_part(command, "standalone")]
    demo = [command for command in listed if in_part(command, "demo")]
    assert set(standalone) | set(demo) == set(listed)
    assert [c for c in standalone if c in demo] == [c for c in standalone if "write_demo_embed(" in c]  # both
    assert run_all(tmp_path, part="standalone") >= 9
    stage2 = json.loads((tmp_path / "outputs" / "reference-demo" / "stage2" / "config.json").read_text())
    assert stage2["model_type"] == "cleft"  # the converted authors'-layout checkpoint
    assert (tmp_path / "outputs" / "embed-demo-data" / "cleft_resized_128px").is_dir()  # the preprocessed copy
