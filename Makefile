# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= data/warehouse.duckdb

.PHONY: run test test-long install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# An editable install leaves the project's modules uncompiled, and with PYTHONDONTWRITEBYTECODE
# set (as on the project's machines) every process compiled all ~50 of them again: ~0.2 s of
# each CLI start. Compiled here once; a module edited later is compiled in memory until the next
# install (Python checks the source's mtime).
install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/python -m compileall -q engine pipelines

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q engine pipelines

## run: install, process the bundled sample, print balances and the ledger summary
run: install
	$(BIN)/perkflow run --programs data/programs --events data/sample/events --db $(DB)
	$(BIN)/perkflow balances --db $(DB) --limit 10
	$(BIN)/perkflow report ledger_summary --db $(DB)

## test: install dev dependencies and run the whole suite
# One pytest worker per core (pytest-xdist), handing out tests as workers free up: the property
# tests take minutes each, and on two cores the suite took 48 min in one process, 24 in two.
test: install-dev
	$(BIN)/python -m pytest -q -n auto --dist worksteal

## test-long: the same with 5x the property tests' examples (tests/helpers/examples.py)
test-long: install-dev
	PERKFLOW_EXAMPLES_SCALE=5 $(BIN)/python -m pytest -q -n auto --dist worksteal

clean:
	rm -rf $(VENV) $(DB) $(DB).wal
