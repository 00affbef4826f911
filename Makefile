# FLTS entry points. Every target sets up what it needs (the virtualenv) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ../shared/datasets
SEEDS ?= 5
BUILD := build
# The dev servers (Kafka API, S3, MLflow, PostgreSQL databases, helm) are test tooling under
# tests/servers; the scripts and benchmarks that reuse them run with tests/ on the path.
WITH_TEST_SERVERS := PYTHONPATH=tests

.PHONY: help install lint format test faults bench-accuracy bench-pipeline bench-serve bench-serve-ci bench-protocols bench-auth bench-live bench-ui bench-cli bench-fleet-serving bench-fleet e2e deploy-check image-check system-deps run clean lock

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install FLTS with every extra, pinned by constraints.txt

lint: install  ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check src tests benchmarks scripts loadtest
	$(BIN)/ruff format --check src tests benchmarks scripts loadtest
	$(BIN)/mypy

format: install  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks scripts loadtest
	$(BIN)/ruff format src tests benchmarks scripts loadtest

# Debian packages: Prometheus (and its promtool) for the scrape test and the rule tests, wrk
# (a C load generator) for the serving benchmark, Chromium for the dashboard's browser tests
# and benchmark (Playwright drives it; it never downloads a browser of its own).
system-deps:  ## Debian packages the tests and benchmarks need (prometheus, wrk, chromium); installs them when run as root
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v wrk >/dev/null \
		&& command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus wrk chromium >/dev/null \
			&& { pkill -x prometheus || true; }; \
		else echo "install Debian's prometheus, wrk and chromium packages (sudo apt-get install prometheus wrk chromium)" >&2; exit 1; fi; }

test: install system-deps  ## Run the test suite (unit, contract on real servers, API, e2e, deploy)
	$(BIN)/pytest --ignore=tests/faults

faults: install system-deps  ## Fault-injection suite: broken rows, outages, killed processes, corrupt artifacts
	$(BIN)/pytest tests/faults

bench-accuracy: install  ## Accuracy benchmark on the Barcelona datasets (5 seeds), JSON in build/
	$(BIN)/flts benchmark accuracy --data-dir $(DATA_DIR) --seeds $(SEEDS) \
		--json-file $(BUILD)/bench/accuracy.json

run: install  ## The embedded system, one process per service (DATA=train.csv [TEST=test.csv] IDENTIFIER=name)
	$(BIN)/flts up $(if $(DATA),--data $(DATA)) $(if $(TEST),--test $(TEST)) \
		$(if $(IDENTIFIER),--identifier $(IDENTIFIER))

bench-pipeline: install  ## flts pipeline on PobleSec with every model type (fresh home); JSON in build/
	rm -rf $(BUILD)/bench/pipeline-home
	FLTS_HOME=$(BUILD)/bench/pipeline-home $(BIN)/flts pipeline --train $(DATA_DIR)/PobleSec.csv --test $(DATA_DIR)/PobleSec_test.csv \
		--identifier PobleSec --models LSTM,GRU,RIDGE,PERSISTENCE,PROPHET \
		--json-file $(BUILD)/bench/pipeline.json

bench-serve: install system-deps  ## Serving benchmark (wrk: FLTS vs a bare ASGI floor and mlflow models serve), swap under load; JSON in build/bench/
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.serve --duration 10 --repeats 3 --connections 1,8,32 \
		--batch-forms rows,windows,encoded --json-file $(BUILD)/bench/serve.json
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.swap --duration 15 --json-file $(BUILD)/bench/swap.json

bench-serve-ci: install system-deps  ## Short serving benchmark: fails only on failed requests or a broken run
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.serve --duration 3 --repeats 1 --epochs 1 --check \
		--json-file $(BUILD)/bench/serve-ci.json
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.swap --duration 6 --epochs 1 --check --json-file $(BUILD)/bench/swap-ci.json

bench-protocols: install system-deps  ## OIP v2 infer and MLflow /invocations vs /v1/forecast (wrk, one worker, 32 connections); JSON in build/bench/
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.protocols --duration 5 --repeats 3 --connections 32 \
		--json-file $(BUILD)/bench/protocols.json

bench-auth: install  ## What API key authentication costs per forecast, in-process (median of rounds); JSON in build/bench/
	$(BIN)/python -m benchmarks.auth_cost --rounds 21 --requests 2000 --json-file $(BUILD)/bench/auth.json

bench-live: install system-deps  ## Live operation: observations/s (gateway, bus), ledger cost per forecast, monitor lag at 1,000 stations; JSON in build/bench/
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.live --duration 8 --repeats 3 --json-file $(BUILD)/bench/live.json

bench-cli: install  ## flts --help and flts status --help start-up (median of 15 runs) beside python -c pass; JSON in build/bench/
	$(BIN)/python -m benchmarks.cli_startup --runs 15 --json-file $(BUILD)/bench/cli.json

bench-ui: install system-deps  ## Dashboard fleet page load at 1,000 identifiers in headless Chromium, beside a 10-identifier floor; JSON in build/bench/
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.ui_fleet --identifiers 1000 --floor 10 --loads 15 --json-file $(BUILD)/bench/ui.json \
		--screenshot $(BUILD)/bench/ui-fleet-1000.png

bench-fleet-serving: install system-deps  ## One replica serving 1,000 identifiers: RSS with and without the LRU bound, p50/p99 at 32 connections (random identifiers), cold loads, discovery requests at 100 vs 1,000; JSON in build/bench/
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.fleet_serving --identifiers 1000 --duration 10 \
		--discovery 100,1000 --json-file $(BUILD)/bench/fleet_serving.json

# The whole fleet proof: 1,000 stations from one upload to their champions (training), then one
# replica serving them (bench-fleet-serving's run). FLEET_STATIONS and FLEET_REPLICAS (trainers per
# model type: one RIDGE trainer alone needs most of a core for 1,000 stations) scale it.
FLEET_STATIONS ?= 1000
FLEET_REPLICAS ?= 2
bench-fleet: install system-deps  ## Fleet: FLEET_STATIONS (1,000) synthetic stations uploaded at once to promoted champions, FLEET_REPLICAS (2) trainers per type (wall, CPU s per station and per service; no forecast figures), then the fleet-serving run; JSON in build/bench/
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.fleet_training --stations $(FLEET_STATIONS) \
		--trainer-replicas $(FLEET_REPLICAS) --no-figures --json-file $(BUILD)/bench/fleet_training.json
	$(WITH_TEST_SERVERS) $(BIN)/python -m benchmarks.fleet_serving --identifiers 1000 --duration 10 \
		--discovery 100,1000 --json-file $(BUILD)/bench/fleet_serving.json

e2e: install  ## The distributed system on real Kafka-API, S3, PostgreSQL and MLflow servers
	$(WITH_TEST_SERVERS) $(BIN)/python scripts/e2e_distributed.py --data-dir $(DATA_DIR)

deploy-check: install system-deps image-check  ## Offline k8s checks: helm lint/template, kubernetes-validate, promtool; build/k8s/rendered.yaml; and image-check
	$(WITH_TEST_SERVERS) $(BIN)/python scripts/deploy_check.py

# A fresh virtualenv per image takes minutes (pip installs MLflow and the rest each time), too
# slow for the test suite: CI runs it through deploy-check.
image-check: install  ## Each image's extras alone in a fresh virtualenv, every service entry point imported; JSON in build/
	mkdir -p $(BUILD)
	$(BIN)/python scripts/image_check.py --json-file $(BUILD)/image-check.json

lock: install  ## Refresh constraints.txt from the current virtualenv
	$(BIN)/pip freeze --exclude-editable | grep -v '^flts' > constraints.txt

clean:  ## Remove the virtualenv and build outputs
	rm -rf $(VENV) $(BUILD) .mypy_cache .pytest_cache .ruff_cache
