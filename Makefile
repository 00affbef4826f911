# FLTS entry points. Every target sets up what it needs (the virtualenv) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ../shared/datasets
SEEDS ?= 5
BUILD := build

.PHONY: help install lint format test bench-accuracy bench-pipeline run clean lock

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install FLTS with every extra, pinned by constraints.txt

lint: install  ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: install  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

test: install  ## Run the test suite
	$(BIN)/pytest

bench-accuracy: install  ## Accuracy benchmark on the Barcelona datasets (5 seeds), JSON in build/
	$(BIN)/flts benchmark accuracy --data-dir $(DATA_DIR) --seeds $(SEEDS) \
		--json $(BUILD)/bench/accuracy.json

run: install  ## The embedded system, one process per service (DATA=train.csv [TEST=test.csv] IDENTIFIER=name)
	$(BIN)/flts up $(if $(DATA),--data $(DATA)) $(if $(TEST),--test $(TEST)) \
		$(if $(IDENTIFIER),--identifier $(IDENTIFIER))

bench-pipeline: install  ## flts pipeline on PobleSec with every model type (fresh home); JSON in build/
	rm -rf $(BUILD)/bench/pipeline-home
	FLTS_HOME=$(BUILD)/bench/pipeline-home $(BIN)/flts pipeline --train $(DATA_DIR)/PobleSec.csv --test $(DATA_DIR)/PobleSec_test.csv \
		--identifier PobleSec --models LSTM,GRU,RIDGE,PERSISTENCE,PROPHET \
		--json $(BUILD)/bench/pipeline.json

lock: install  ## Refresh constraints.txt from the current virtualenv
	$(BIN)/pip freeze --exclude-editable | grep -v '^flts' > constraints.txt

clean:  ## Remove the virtualenv and build outputs
	rm -rf $(VENV) $(BUILD) .mypy_cache .pytest_cache .ruff_cache
