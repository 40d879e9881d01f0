# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= data/warehouse.duckdb

.PHONY: run test install install-dev clean

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
test: install-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DB) $(DB).wal
