# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test test-x64 test-x64-all lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The bench extra (CPU torch, for the torch.autograd.gradcheck rows) has its own
# stamp so that `make test` never installs torch.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/jgradcheck demo

# Two pytest-xdist workers (the 2-core CI machine; `make test JOBS=auto` uses
# every core). tests/conftest.py puts the slowest tests first: work stealing
# then gives the first worker those, the second the rest, and balances the
# tail. (--dist loadgroup would not help: with pytest 9 xdist_group is ignored.)
JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal

# Every test must pass in both x64 settings (tests pin their dtypes; issue 12).
# CI runs `make test` (JAX's default, x64 off) and then these quick files, which
# cover check_grad's verdicts, bad input, eps_sweep and the evaluation context,
# with JAX_ENABLE_X64=1 (about 25 s on 2 cores). `make test-x64-all` runs every
# file that way (the whole suite's time again).
X64_TESTS ?= tests/test_correct.py tests/test_inputs.py tests/test_eps.py tests/test_context.py
test-x64: $(STAMP)
	JAX_ENABLE_X64=1 $(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal $(X64_TESTS)

test-x64-all: $(STAMP)
	JAX_ENABLE_X64=1 $(BIN)/python -m pytest -n $(JOBS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check jgradcheck tests bench examples _jgradcheck_pytest.py
	$(BIN)/ruff format --check jgradcheck tests bench examples _jgradcheck_pytest.py
	$(BIN)/mypy

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/rules.py
	$(BIN)/python bench/points.py
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/fast.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/suite.py

# The docs tools are a separate extra and stamp, so `make test` stays lean.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
