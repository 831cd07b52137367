# Two commands for a new user: `make run` and `make test`. Both set everything up first.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.installed
DEB_PACKAGES := fluidsynth fluid-soundfont-gm
TEST_DEB_PACKAGES := chromium
PROFILE ?= quick
ARGS ?=

.PHONY: setup setup-test run pretrained test test-slow test-all lint bench clean

setup: $(STAMP)
	@bash .ci/debian-deps $(DEB_PACKAGES)

setup-test: setup
	@bash .ci/debian-deps $(TEST_DEB_PACKAGES)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(PY) -m flows.pipeline --profile $(PROFILE) $(ARGS)

# Rebuild the shipped models in models/pretrained/ (hours on 2 cores; resumes when killed;
# replaces a shipped model only when its numbers improve).
pretrained: setup
	$(PY) -m flows.pretrained $(ARGS)

test: setup-test
	$(PY) -m pytest $(ARGS)

test-slow: setup-test
	$(PY) -m pytest -m slow $(ARGS)

test-all: setup-test
	$(PY) -m pytest -m '' $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) -m pip install -q -e '.[dev,bench]'
	for b in bench/bench_*.py; do PYTHONPATH=. $(PY) $$b || exit 1; done

clean:
	rm -rf data .pytest_cache
