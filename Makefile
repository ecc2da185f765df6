# Every command a person needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
STAMP_CHECKOV := .venv-checkov/.installed

.DEFAULT_GOAL := help
# `make setup` (and `make test`) install everything, the browser test's chromium included; the other targets need
# only what they run (`make status` as root never installs a browser).
.PHONY: help setup browser test lint fmt run demo status bench soak lock clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

setup: $(STAMP_PY) $(STAMP_NODE) $(STAMP_CHECKOV) browser ## create .venv, .venv-checkov and node_modules, install chromium (idempotent)

# The browser test drives Debian's chromium with chromium-driver (Playwright's own browser builds cannot be
# downloaded here). Installed where we can (root with apt-get); elsewhere, or when apt-get fails, a note and the
# test skips saying why, except where REQUIRE_BROWSER=1 (.ci/run): there a missing browser fails the test run.
BROWSER_SKIPS := tests/browser will skip (and fail where REQUIRE_BROWSER=1, as in CI)
browser: ## install Debian's chromium + chromium-driver for the browser test (root with apt-get; else a note)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver (apt-get) for tests/browser"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "warning: apt-get could not install chromium and chromium-driver (see above): $(BROWSER_SKIPS)" >&2; \
	else echo "note: chromium/chromium-driver missing and not root with apt-get: $(BROWSER_SKIPS)" >&2; fi

# requirements-dev.txt locks every package with its hashes (make lock): pip checks each download against them.
$(STAMP_PY): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	@touch $@

# checkov pins old pycep-parser/packaging: it lives in its own venv (docs/offline-toolchain.md).
$(STAMP_CHECKOV): requirements-checkov.txt | $(STAMP_PY)
	$(PY) -m devtools.checkov setup

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: setup ## run the whole test suite (starts and stops Azurite and the emulator itself)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP_PY) $(STAMP_CHECKOV) ## ruff (lint + format check), mypy on sync_core, devtools and function_app.py, import cycles, bandit, checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m devtools.import_cycles
	$(VENV)/bin/bandit --quiet --recursive sync_core function_app.py
	@# devtools: the emulator's seeded fault RNG (B311), fixed subprocess argv (B404, B603), "Bearer" (B105) and
	@# narrowing asserts (B101) are the same exceptions ruff's per-file ignores make there (pyproject.toml).
	$(VENV)/bin/bandit --quiet --recursive devtools --skip B101,B105,B311,B404,B603
	$(PY) -m devtools.checkov check

fmt: $(STAMP_PY) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

run: $(STAMP_PY) $(STAMP_NODE) ## start Azurite, the Graph emulator and the local Functions host; Ctrl-C stops all three
	$(PY) -m devtools.run

demo: $(STAMP_PY) $(STAMP_NODE) ## run the whole sync story end to end on Azurite + the emulator + the local host, and print it
	$(PY) -m devtools.demo

status: $(STAMP_PY) $(STAMP_NODE) ## the operator's CLI status on the running `make run`, else the last `make demo` (ARGS="--json")
	$(PY) -m devtools.status $(ARGS)

bench: $(STAMP_PY) $(STAMP_NODE) ## measure webhook latency and ingest rate, Graph requests per message and per send, memory, one mailbox at scale
	$(PY) -m devtools.bench

soak: $(STAMP_PY) $(STAMP_NODE) ## 20 mailboxes, ~1,000 messages, Graph faults, lost notifications, a host killed; exit 1 on any loss or duplicate
	$(PY) -m devtools.soak $(ARGS)

lock: $(STAMP_PY) ## recompile requirements.txt, requirements-dev.txt and requirements-checkov.txt (every dependency, with hashes) from the .in files
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements-dev.txt requirements-dev.in
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements-checkov.txt requirements-checkov.in

clean: ## remove the venv, node_modules and caches
	rm -rf $(VENV) .venv-checkov node_modules .run .pytest_cache .mypy_cache .ruff_cache
