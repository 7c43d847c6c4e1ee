# Everyday commands. `make train` and `make test` install what is missing first.
#   make train ARGS="experiment=mnist_pgd_at data.data_dir=../shared/datasets"
#   make test            fast test suite (what CI runs)
#   make docs            build the documentation site (mkdocs build --strict)
# The active virtualenv is used when there is one; otherwise ./.venv is created.

SHELL := /bin/bash
VENV ?= .venv
ifdef VIRTUAL_ENV
PYDIR := $(VIRTUAL_ENV)/bin
else
PYDIR := $(VENV)/bin
endif
PY := $(PYDIR)/python
STAMP := $(PYDIR)/.advlab-installed
ARGS ?=

.PHONY: install train test test-slow test-all lint format docs clean

$(PY):
	python3 -m venv $(VENV)

# torch/torchvision go in first with pip (which honours local wheel caches and constraints);
# uv then installs the rest, keeping that torch, with torchattacks' stale `requests~=2.25.1`
# pin overridden by requirements/overrides.txt (pip alone cannot override a dependency's pin).
$(STAMP): $(PY) pyproject.toml requirements/overrides.txt
	$(PY) -m pip install --quiet uv
	$(PY) -m pip install "torch>=2.3" "torchvision>=0.18"
	$(PY) -m uv pip install --python $(PY) -e ".[dev,docs]" --override requirements/overrides.txt
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# the documentation site into site/; broken links, anchors and docstrings fail the build
docs: $(STAMP)
	$(PYDIR)/mkdocs build --strict

clean:
	rm -rf logs site .pytest_cache .ruff_cache
