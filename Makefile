# i2ibench: `make test` and `make bench` set everything up themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.i2ibench-installed

DATASET ?= builtin
PROTOCOL ?= smoke
METHODS ?=
SEEDS ?=
PYTEST_ARGS ?=

# Offline machines: use the converted TF-FID Inception weights beside the checkout when present
# (see README, "Weights"); an explicit I2IBENCH_INCEPTION_WEIGHTS always wins.
SHARED_WEIGHTS := $(wildcard ../shared/weights/inception-2015-12-05-pool3-noclassifier.pth)
ifneq ($(SHARED_WEIGHTS),)
export I2IBENCH_INCEPTION_WEIGHTS ?= $(abspath $(SHARED_WEIGHTS))
endif
# The raw CUFS folder for DATASET=sketch-photo (prepared on first use), when it is beside the checkout.
SHARED_CUFS := $(wildcard ../shared/datasets/cufs-student)
ifneq ($(SHARED_CUFS),)
export I2IBENCH_CUFS_DIR ?= $(abspath $(SHARED_CUFS))
endif
export WANDB_MODE ?= offline

ABLATION ?= identity_mu

.PHONY: help setup test bench ablation compare bench-speed bench-gpu clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: DATASET=$(DATASET) PROTOCOL=$(PROTOCOL) METHODS=<a,b> SEEDS=<0,1,2> ABLATION=$(ABLATION) A=<results> B=<results>"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

setup: $(STAMP) ## create .venv and install i2ibench with its dev extra (re-run when pyproject.toml changes)

# The HTML report's test renders it in a headless browser: Debian's Chromium (about 20 s to install).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM) ## run the test suite (installs Debian's Chromium for the HTML report's test)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## train and evaluate every applicable method on DATASET; tables under results/
	$(BIN)/i2ibench bench --dataset $(DATASET) --protocol $(PROTOCOL) \
		$(if $(METHODS),--methods $(METHODS)) $(if $(SEEDS),--seeds $(SEEDS))

ablation: $(STAMP) ## sweep one setting as a W&B group: make ablation ABLATION=identity_mu (configs/ablations/)
	$(BIN)/i2ibench bench --ablation configs/ablations/$(ABLATION).yaml $(if $(SEEDS),--seeds $(SEEDS))

compare: $(STAMP) ## side-by-side table of two result folders: make compare A=... B=...
	$(BIN)/i2ibench compare $(A) $(B)

bench-speed: $(STAMP) ## training and evaluation speed and memory benchmarks; figures in results/perf/
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/train_speed.py --quality
	$(BIN)/python benchmarks/train_speed.py --scaling
	$(BIN)/python benchmarks/metrics_speed.py

bench-gpu: $(STAMP) ## GPU check (<= 8 min): results/perf/gpu.json; TINY=1: the tiny CPU version (gpu-tiny.json)
	$(BIN)/python benchmarks/gpu_check.py $(if $(filter-out 0,$(TINY)),--tiny)

clean: ## remove run folders (not results/, not the cache in ~/.cache/i2ibench)
	rm -rf runs wandb lightning_logs .pytest_cache
