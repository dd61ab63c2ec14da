# MaaS Lab: `make app` starts the playground, `make test` runs the whole suite. Both set up .venv
# first; a second set-up with unchanged requirements takes seconds (a stamp file says it is done).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
HOST   ?= 127.0.0.1
PYTEST_ARGS ?=
# test workers (pytest-xdist): each runs whole test files, in the suite's order (browser last);
# WORKERS=0 runs the suite in this one process
WORKERS ?= 2

# Offline by design: no hub look-ups, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export ORT_DISABLE_TELEMETRY := 1
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false

.PHONY: setup app test bench lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

app: setup
	$(BIN)/streamlit run app/streamlit_app.py \
		--server.port $(PORT) --server.address $(HOST) --server.headless true \
		--browser.gatherUsageStats false

test: setup
	MAASLAB_FAST=1 $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder \
		$(PYTEST_ARGS)

bench: setup
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports  # the layers in pyproject.toml [tool.importlinter]

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache .import_linter_cache test-results
