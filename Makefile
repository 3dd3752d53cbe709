# Every workflow is a target; `make run` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_ARGS ?=

.PHONY: help run test lint compile demo-data clean

help:
	@echo "make run      - set up .venv, run the whole pipeline locally (kfp.local) on demo data"
	@echo "make test     - set up .venv, lint and run the test suite"
	@echo "make compile  - write pipeline.yaml for a Kubeflow cluster"
	@echo "make clean    - remove local runs, registry, demo data and .venv"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/shapes-pipeline run --pipeline-root runs --registry registry --summary summary.json $(RUN_ARGS)

test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

compile: $(STAMP)
	$(BIN)/shapes-pipeline compile -o pipeline.yaml

clean:
	rm -rf runs registry summary.json pipeline.yaml $(VENV)
