# vSphere Backup Manager: the two commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test deps deps-test venv lab lint typecheck pytest format clean

up: deps venv lab  ## install what is missing, then run every service (Ctrl-C stops)
	$(BIN)/vbm up

test: deps-test venv lab lint typecheck pytest  ## install what is missing, then the whole suite

deps:
	@scripts/install-system-deps.sh

deps-test:
	@scripts/install-system-deps.sh --for-tests

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lab: venv  ## build the vCenter simulator (cached by a hash of its sources)
	$(BIN)/python -c "from lab.launcher import build_lab; print('lab binary:', build_lab())"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var .mypy_cache .pytest_cache .ruff_cache
