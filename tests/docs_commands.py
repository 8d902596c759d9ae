"""The commands of README.md and docs/*.md, and `make docs-check`: run them all on a small demo tree.

    python tests/docs_commands.py            # what `make docs-check` runs (about 6 minutes on 2 CPU cores)

The suite runs the same (see the last paragraph); `tests/test_docs_run.py` also checks what the small `make demo`
wrote.

A command is a line of a ```bash block (backslash continuations joined, comments dropped). Each is one of:
- `make demo`: run as the demo at a small size into the sandbox (`make test/bench/docs-check` are CI targets);
- a real-data command (a path under /data/, or an upload without `--build_only`): it must have a demo twin in
  the same document, a command of the same script on the demo data, which is run instead;
- anything else runs verbatim, in a sandbox folder whose `outputs/` is fresh, with training shortened by
  `DEMO_SIZE` (the only arguments added).
Inline commands (`python examples/... -h`, `python -m ...`) in the text are run verbatim too; benchmark scripts
are `make bench`'s and only checked to exist. `tests/test_docs.py` checks the same list statically in the suite.

The suite runs the commands in two parts, each in its own sandbox, so that two pytest workers share them:
`tests/test_docs_run.py` every command that reads what `make demo` wrote, `tests/test_docs_run_standalone.py`
the ones that make their own inputs (`standalone`). `make docs-check` runs all of them in one sandbox, in order.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import shlex
import subprocess
import sys
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CI_TARGETS = ("make test", "make bench", "make docs-check")
# Appended to the training scripts' twins: demo-size runs (validation and checkpoints still exercised).
DEMO_SIZE = {
    "pretrain.py": ["--max_steps", "8", "--warmup_steps", "1", "--save_every", "4", "--eval_every", "4"],
    "prompt_tune.py": ["--max_steps", "6", "--warmup_steps", "1", "--eval_every", "3"],
}
# `make demo` at a small size: the same pipeline, fewer studies and steps.
SMALL_DEMO = {
    "data": {"n_studies": 400, "n_test_per_class": 10},
    "language_model": {"max_steps": 30, "time_budget_s": 15},
    "pretrain": {"max_steps": 16, "warmup_steps": 2, "eval_every": 8},
    "prompt_tune": {"max_steps": 12, "warmup_steps": 2, "eval_every": 6},
}
SMALL_MAMMO_DEMO = {
    "data": {"n_images": 480},
    "pretrain": {"max_steps": 12, "warmup_steps": 2},
    "prompt_tune": {"max_steps": 8, "warmup_steps": 1},
}


def commands(document: Path) -> list[str]:
    """The commands of the ```bash blocks of `document`, in order."""
    found, block = [], None
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            block = [] if block is None and line.strip() == "```bash" else None
            continue
        if block is None:
            continue
        text = line.split(" # ")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if found and found[-1].endswith("\\"):
            found[-1] = found[-1][:-1].rstrip() + " " + text.strip()
        elif text.strip():
            found.append(text.strip())
    return found


def inline_commands(document: Path) -> list[str]:
    """Commands quoted in the text: `python examples/...`, `python -m cleft_hf...`, `python benchmarks/...`."""
    spans = re.findall(r"`((?:python|accelerate launch) [^`]+)`", document.read_text(encoding="utf-8"))
    return [span for span in spans if re.search(r"(examples|benchmarks)/\w+\.py|-m cleft_hf", span)]


def script_of(command: str) -> str | None:
    """The script or module a command runs (`examples/pretrain.py`, `cleft_hf.demo`, `make demo`)."""
    if command.startswith("make "):
        return command
    words = shlex.split(command)
    if words[:2] == ["python", "-c"]:
        return "python -c"
    if "-m" in words and words[0] == "python":
        return words[words.index("-m") + 1]
    return next((w for w in words if w.endswith(".py")), None)


def needs_twin(command: str) -> bool:
    return re.search(r"(^|[\s'\"(=])/data/", command) is not None or (  # also a quoted path in `python -c`
        script_of(command) == "examples/push_to_hub.py" and "--build_only" not in command
    )


def twins(document: Path) -> dict[str, list[str]]:
    """Each real-data command of `document` -> its demo twins (same script, runnable)."""
    listed = commands(document) + inline_commands(document)
    return {
        cmd: [other for other in listed if not needs_twin(other) and script_of(other) == script_of(cmd)]
        for cmd in listed
        if needs_twin(cmd)
    }


def argv_of(command: str) -> list[str]:
    """The command as an argument list for this interpreter (python / accelerate launch -> sys.executable)."""
    words = shlex.split(command)
    if words[:2] == ["accelerate", "launch"]:
        words = [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
    elif words[0] == "python":
        words = [sys.executable, *words[1:]]
    script = Path(next((w for w in words if w.endswith(".py")), "")).name
    return words + DEMO_SIZE.get(script, [])


def small_demo_config(sandbox: Path, name: str = "demo.yaml", sizes: dict | None = None) -> Path:
    """The demo's config `name` with the small sizes, written into `sandbox`."""
    import yaml

    config = yaml.safe_load((REPO / "cleft_hf" / "demo" / name).read_text(encoding="utf-8"))
    for section, values in (SMALL_DEMO if sizes is None else sizes).items():
        config[section].update(values)
    path = sandbox / f"small_{name}"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def small_demo_argv(sandbox: Path, output_dir: str = "outputs/demo") -> list[str]:
    """`python -m cleft_hf.demo` at the small size (both modalities)."""
    return [
        sys.executable,
        "-m",
        "cleft_hf.demo",
        "--output_dir",
        output_dir,
        "--config",
        str(small_demo_config(sandbox)),
        "--mammo_config",
        str(small_demo_config(sandbox, "embed_demo.yaml", SMALL_MAMMO_DEMO)),
    ]


def run(argv: list[str], sandbox: Path) -> float:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"docs-check: `{shlex.join(argv)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def runs_as_twin(document: Path, command: str) -> bool:
    """Whether `command` is a real-data command (its demo twin runs instead); one without a twin is an error."""
    if not needs_twin(command):
        return False
    if not twins(document)[command]:
        raise SystemExit(f"docs-check: {document.name}: `{command}` has no demo twin")
    return True


def standalone(command: str) -> bool:
    """Whether `command` needs nothing that `make demo` wrote: the authors'-checkpoint twins (their own tiny
    checkpoints), the accounting (meta device), `-h`, the preprocessing of the EMBED demo tree."""
    script = script_of(command) or ""
    return (
        "outputs/reference-demo" in command
        or script in ("cleft_hf.accounting", "cleft_hf.data.preprocess")
        or command.endswith(" -h")
    )


def input_of_standalone(command: str) -> bool:
    """A command that writes the inputs of standalone ones (the EMBED demo tree): it runs in both parts."""
    return "write_demo_embed(" in command


def in_part(command: str, part: str) -> bool:
    """Whether `command` runs in `part`: "all", "demo" (what reads `make demo`'s outputs) or "standalone"."""
    if part == "all" or input_of_standalone(command):
        return True
    return standalone(command) == (part == "standalone")


def run_all(sandbox: Path, part: str = "all") -> int:
    """Run every command of `part` (see `in_part`) in `sandbox` (a fresh folder); returns how many ran. A failure
    ends in SystemExit."""
    for name in ("examples", "cleft_hf", "benchmarks", "docs"):  # relative paths resolve as in the repository
        (sandbox / name).symlink_to(REPO / name)
    ran = 0
    for document in DOCUMENTS:
        for command in commands(document):
            if command in CI_TARGETS or runs_as_twin(document, command) or not in_part(command, part):
                continue
            argv = argv_of(command) if command != "make demo" else small_demo_argv(sandbox)
            seconds = run(argv, sandbox)
            ran += 1
            print(f"ok {seconds:6.1f} s  {document.name}: {command}", flush=True)
        for command in inline_commands(document):
            if script_of(command) == "cleft_hf.demo" or runs_as_twin(document, command):  # ran as `make demo`
                continue
            if not in_part(command, part):
                continue
            if script_of(command).startswith("benchmarks/"):
                assert (REPO / script_of(command)).is_file(), command
                continue
            seconds = run(argv_of(command), sandbox)
            ran += 1
            print(f"ok {seconds:6.1f} s  {document.name}: {command}", flush=True)
    print(f"docs-check: {ran} commands ran ({part})")
    return ran


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cleft-docs-") as folder:
        run_all(Path(folder))


if __name__ == "__main__":
    main()
