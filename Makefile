# lingma-gw: every target is one obvious command. `make run` and `make test` do all set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/demo.toml
QUICK ?=
# Test files run in parallel, each file whole in one pytest worker (module fixtures, order).
# Most of a test's time is waiting on real processes, so 3 workers fit 2 cores.
TEST_WORKERS ?= 3
# Real CLI clients (Claude Code, Codex CLI) for tests/clients, pinned in package.json there.
NODE_CLIENTS := tests/clients/node
NODE_STAMP := $(NODE_CLIENTS)/node_modules/.installed

.PHONY: install lint format test test-unit test-component test-process test-clients run bench clean

install: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml
	# Debian packages: Chromium for auto-login, nginx and HAProxy for the scale-out tests.
	missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	[ -z "$$missing" ] || (apt-get update -qq && apt-get install -y -qq $$missing)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(NODE_STAMP): $(NODE_CLIENTS)/package.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm install --prefix $(NODE_CLIENTS) --no-audit --no-fund --no-package-lock --loglevel=error
	touch $(NODE_STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install lint
	$(BIN)/pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile \
		tests/unit tests/component tests/process tests/clients

test-unit test-component test-process test-clients: install
	$(BIN)/pytest tests/$(subst test-,,$@)

run: install
	$(BIN)/lingma-gw serve --config $(CONFIG)

bench: install
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info bench/results/*.tmp
	rm -rf $(NODE_CLIENTS)/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
