# The two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint typecheck protos protos-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/credit-gateway --log-level WARNING demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python -m protos.generate

protos-check: $(STAMP)
	$(BIN)/python -m protos.generate --check

check: protos-check lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.mix
	$(BIN)/python -m bench.audit_bench
	$(BIN)/python -m bench.decision_bench
	$(BIN)/python -m bench.controls_bench
	$(BIN)/python -m bench.report_bench
	$(BIN)/python -m bench.screen_bench
	$(BIN)/python -m bench.portal_bench
	$(BIN)/python -m bench.workers_bench
	$(BIN)/python -m bench.audit_pg_bench
	$(BIN)/python -m bench.stores_bench
	$(BIN)/python -m bench.soak --queries 1000000

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
