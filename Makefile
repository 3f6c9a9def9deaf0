# Two commands for a fresh machine: `make quickstart` and `make test`.
# Both create .venv and install in the order that works on these machines:
#   1. torch + torchvision (the CUDA build; the same venv serves GPU nodes)
#   2. every other dependency of pyproject.toml except deepspeed
#   3. deepspeed with --no-build-isolation (its build imports torch)
#   4. fdsl itself, editable (nothing left to resolve)
# The installer is uv (pinned, from PyPI into the venv; `uv pip install` takes pip's arguments): it
# downloads and unpacks in parallel. Steps 1-3 back to back on one 2-core machine: pip 107 s, uv
# 49 s with an empty cache; the same packages at the same versions. --compile-bytecode writes the
# .pyc files: these machines set PYTHONDONTWRITEBYTECODE=1, so a module without one is compiled
# anew in every process (tried without: the suite ran 20+ minutes longer). A stamp file makes a second run reuse
# the venv; with uv's cache in place (~/.cache/uv, ~6 GB, hard-linked into the venv) steps 1-3 of a
# new venv take 29 s.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fdsl-installed
TORCH := torch==2.14.1 torchvision==0.29.1
UV_VERSION := 0.13.9
UV := $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: install quickstart test test-fast test-drills test-cluster cluster-up cluster-down cluster-drill lint bench clean
CLUSTER_DIR ?= runs/local-cluster

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "== fdsl install: creating $(VENV) (reused if it exists)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "uv==$(UV_VERSION)"
	@echo "== [1/4] torch"
	$(UV) $(TORCH)
	@echo "== [2/4] dependencies (all of pyproject.toml but deepspeed)"
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] if not d.startswith(("deepspeed", "torch"))))' > $(VENV)/requirements-base.txt
	$(UV) setuptools wheel -r $(VENV)/requirements-base.txt
	@echo "== [3/4] deepspeed (--no-build-isolation)"
	$(UV) --no-build-isolation "deepspeed>=0.15"
	@echo "== [4/4] fdsl (editable)"
	$(UV) --no-build-isolation --no-deps -e ".[dev]"
	$(BIN)/python -c "import fdsl, ray, torch, deepspeed, timm, numba; print('installed fdsl', fdsl.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/fdsl quickstart --out runs/quickstart

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --durations=15 -m "not cluster and not drill"

# the interruption drills (real processes, real signals; several minutes): after the suite
test-drills: $(STAMP)
	$(BIN)/python -m pytest -m drill --durations=10

# the multi-node drills on a local autoscaling cluster (deploy/local; about 12 minutes); CI runs it too
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster -s

# a local autoscaling multi-node Ray cluster (Ray's fake multi-node provider; docs/cluster.md)
cluster-up: $(STAMP)
	$(BIN)/python deploy/local/cluster.py up --dir $(CLUSTER_DIR)

cluster-down: $(STAMP)
	$(BIN)/python deploy/local/cluster.py down --dir $(CLUSTER_DIR)

# every drill on a cluster of its own, one JSON line at the end (docs/cluster.md)
cluster-drill: $(STAMP)
	$(BIN)/python benchmarks/cluster_drill.py --dir runs/cluster-drill-$$(date +%Y%m%d-%H%M%S)

# the tests that start no Ray and train nothing (about a minute): the loop while editing
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not cluster and not drill"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	NUMBA_NUM_THREADS=1 $(BIN)/python benchmarks/generators.py

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
