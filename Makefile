# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates the virtual environment and installs what it needs.
# `make check` runs the import contracts, ruff and mypy (`make test` runs it first).
# `make bench` measures throughput on the local services (BENCH_SCALE, BENCH_CASES; see bench/).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test check unit integration faults bench services venv clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,console]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/swarm demo

services:
	bash deploy/dev/services.sh

test: check services
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The house's rules: the import contracts (setup.cfg [importlinter]), style (ruff.toml), types (setup.cfg [mypy]).
check: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy swarm master workers

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration and not faults"

integration: $(STAMP) services
	$(BIN)/python -m pytest -q -p no:cacheprovider -m integration

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
