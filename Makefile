# lingma-gw: every target is one obvious command. `make run` and `make test` do all set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/demo.toml
QUICK ?=

.PHONY: install lint format test test-unit test-component test-process test-clients run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx-light)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install lint
	$(BIN)/pytest -p no:cacheprovider tests/unit tests/component tests/process tests/clients

test-unit test-component test-process test-clients: install
	$(BIN)/pytest tests/$(subst test-,,$@)

run: install
	$(BIN)/lingma-gw serve --config $(CONFIG)

bench: install
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info bench/results/*.tmp
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
