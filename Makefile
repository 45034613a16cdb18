# The two commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WORKSPACE ?= data
LANDING ?= landing
PORT ?= 3000

.PHONY: run test ui bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# --no-compile: pip would byte-compile all ~20,000 modules of the dependencies (about 60 s of one core); Python
# compiles the ~4,700 a run imports on first use instead (about 14 s, and cached in the venv from then on).
# That cache needs bytecode writing on: a PYTHONDONTWRITEBYTECODE in the caller's environment (some CI images and
# sandboxes set it) would make every process of the test suite compile its imports again (about 15 s of a
# clean-clone test run, measured).
unexport PYTHONDONTWRITEBYTECODE
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --no-compile -e '.[test]'
	touch $@

install: $(VENV)/.installed

## Full pipeline on the bundled sample drops: embedded DuckDB, local DVC remote.
run: install
	$(BIN)/curate samples --landing $(LANDING)
	$(BIN)/curate run --landing $(LANDING) --workspace $(WORKSPACE)

## Whole test suite, one worker per core (each test module runs whole on one worker).
test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile

## Dagster web UI on http://127.0.0.1:$(PORT) (the landing sensor runs while it is up).
ui: install
	mkdir -p $(WORKSPACE)/.dagster
	test -f $(WORKSPACE)/.dagster/dagster.yaml || cp dagster.yaml $(WORKSPACE)/.dagster/dagster.yaml
	DAGSTER_HOME=$(abspath $(WORKSPACE))/.dagster CURATION_WORKSPACE=$(WORKSPACE) CURATION_LANDING=$(LANDING) \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

## Throughput and peak memory per stage (JSON in bench/results/).
bench: install
	$(BIN)/python bench/run_bench.py --docs 20000 --out bench/results/latest.json

clean:
	rm -rf $(WORKSPACE) $(LANDING)
