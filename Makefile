# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/vigil demo
	$(BIN)/vigil serve

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(VENV)/.installed
	$(BIN)/python bench/auth.py
	$(BIN)/python bench/requests.py
	$(BIN)/python bench/schedule.py
	$(BIN)/python bench/session.py
	$(BIN)/python bench/scan.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/records.py
	$(BIN)/python bench/simulate.py
	$(BIN)/python bench/witness_power.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
