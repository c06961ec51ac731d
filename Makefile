# vSphere Backup Manager: the two commands are `make up` and `make test`.
# Python packages come only from the lock (requirements/*.txt, hashes checked): see docs/testing.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PYTHON VENV

.PHONY: ui-shots up test deps deps-test venv venv-runtime lab lint typecheck pytest format clean lock lock-upgrade outdated vendor-web

up: deps venv-runtime lab  ## install what is missing, then run every service (Ctrl-C stops)
	$(BIN)/vbm up

test: deps-test venv lab lint typecheck pytest  ## install what is missing, then the whole suite

deps:
	@scripts/install-system-deps.sh

deps-test:
	@scripts/install-system-deps.sh --for-tests

venv:  ## .venv from requirements/dev.txt (made again when the lock changed)
	@scripts/venv.sh dev

venv-runtime:
	@scripts/venv.sh runtime

lock: venv  ## resolve what pyproject.toml changed into the lock, keeping every other pin
	scripts/lock.sh

lock-upgrade: venv  ## every package to the newest release its range allows (PACKAGE=name for one)
	scripts/lock.sh $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)

outdated: venv  ## newer releases than the lock has (a refresh is `make lock-upgrade`, reviewed)
	@$(BIN)/python -m pip list --outdated --disable-pip-version-check 2>/dev/null

lab: venv-runtime  ## build the vCenter simulator (cached by a hash of its sources and Go's version)
	$(BIN)/python -c "from lab.launcher import build_lab; print('lab binary:', build_lab())"

vendor-web:  ## copy the front-end libraries web/package-lock.json pins into the gateway's static files (npm)
	scripts/vendor-web.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv  ## every file on two workers, then the tests that measure speed alone
	$(BIN)/pytest -n 2 --dist loadfile -m "not serial"
	$(BIN)/pytest -m serial

ui-shots: venv lab  ## the web UI's screenshots in docs/ui/, taken by its browser tests at 1280x800
	VBM_UI_SHOTS=$(CURDIR)/docs/ui $(BIN)/pytest -n0 -q tests/ui

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var .mypy_cache .pytest_cache .ruff_cache
