# Quick start: `make demo` (the main job on the built-in demo data) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo

.PHONY: venv lint test demo docs-check bench clean

# PYTHONWARNINGS: setuptools prints a notice on every editable install of a flat layout; nothing to fix.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

$(STAMP): setup.py constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(QUIET_EDITABLE) $(PIP) install -q -c constraints.txt -e ".[dev,app,quantization]"
	touch $(STAMP)

venv: $(STAMP)

# Lint first (seconds; settings in pyproject.toml): a formatting or lint error fails before the suite runs.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# Two pytest workers on the two cores, a test file per worker at a time (module fixtures built once; the longest
# files first, in the order of tests/conftest.py: --no-loadscope-reorder, else xdist orders files by their number
# of tests), one torch thread per process so that the workers do not oversubscribe.
test: lint
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m cleft_hf.demo --output_dir $(DEMO_DIR)

# Every command of README.md and docs/ on a small demo tree (real-data commands through their demo twins).
docs-check: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) tests/docs_commands.py

bench: $(STAMP)
	$(QUIET_EDITABLE) $(PIP) install -q -c constraints.txt -e ".[bench]"
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs
