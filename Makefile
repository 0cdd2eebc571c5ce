# Every target creates .venv and installs the project into it first, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench lock clean

# Every dependency comes at the exact version and hash of requirements-dev.lock; the project itself is installed
# on top without resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "crmsync needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

## run: the main job on embedded defaults (starts its own Redis when REDIS_URL is unset)
run: $(STAMP)
	$(BIN)/crmsync run

## test: the whole test suite (starts its own Redis when REDIS_URL is unset)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff and mypy, as CI runs them
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## lock: bring requirements.lock (production image) and requirements-dev.lock (make, CI) up to date with
## pyproject.toml, at the newest versions it allows, with hashes, for every platform and Python 3.11+
lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --universal --generate-hashes --upgrade --python-version 3.11 \
		pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --universal --generate-hashes --upgrade --python-version 3.11 \
		--extra dev --extra dev-stack pyproject.toml -o requirements-dev.lock

## bench: benchmarks, printed as ratios against references measured in the same run
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
