.PHONY: help install style check test test-fast demo bench data compare

PYTHON ?= python
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE = 1

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

install:  ## Install the package with test and dev extras (CPU torch first)
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

style:  ## Format and fix lint
	ruff format .
	ruff check --fix .

check:  ## Lint and format check
	ruff check .
	ruff format --check .

test:  ## All tests (the CI command)
	$(PYTHON) -m pytest -q

test-fast:  ## Tests not marked slow
	$(PYTHON) -m pytest -q -m "not slow"

demo:  ## Train the embedded default model (chatterbot-corpus, CPU, < 10 min)
	automlm-train

bench:  ## Speed benchmarks (print ratios)
	$(PYTHON) benchmarks/train_step.py
	$(PYTHON) benchmarks/encode.py

data:  ## Build the retrieval benchmarks under data/ (chatterbot-corpus; Debian Reference via apt-get download)
	automlm-build-benchmark chatterbot --output data/chatterbot-qa
	automlm-build-benchmark debian-reference --output data/debian-reference

compare: data  ## Train and evaluate every ablation variant over 3 seeds (about an hour on 2 cores)
	automlm-compare --workers 2
