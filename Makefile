# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= data/warehouse.duckdb

.PHONY: run test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

## run: install, process the bundled sample, print balances and the ledger summary
run: install
	$(BIN)/perkflow run --programs data/programs --events data/sample/events --db $(DB)
	$(BIN)/perkflow balances --db $(DB) --limit 10
	$(BIN)/perkflow report ledger_summary --db $(DB)

## test: install dev dependencies and run the whole suite
test: install-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DB) $(DB).wal
