# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.petkit-installed

.PHONY: install demo test lint bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,serve]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e plugins/petkit-example-plugin
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/petkit demo --workdir demo-output --overwrite

lint: $(STAMP)
	$(BIN)/ruff check petkit tests benchmarks plugins

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_dogfacenet.py
