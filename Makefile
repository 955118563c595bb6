# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jgradcheck demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check jgradcheck tests bench
	$(BIN)/ruff format --check jgradcheck tests bench

bench: $(STAMP)
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/rules.py
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/fast.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
