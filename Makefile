# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates the virtual environment and installs what it needs.
# `make check` runs the import contracts, ruff and mypy (`make test` runs it first).
# `make bench` measures throughput on the local services (BENCH_SCALE, BENCH_CASES; see bench/).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
# Processes for the unit tests (pytest-xdist), and for the tests on the services: these mostly wait on the
# services, so one more than the 2 cores CI has.
TEST_WORKERS ?= 2
SERVICE_WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider
# The unit tests are exactly the tests that are neither `integration` nor `faults`; the rest need the services.
UNIT_TESTS := -m "not integration and not faults"
# Of those, the fault suite and the tests that stop a service every test shares (`exclusive`) run alone.
SHARING_TESTS := -m "integration and not exclusive and not faults"
ALONE_TESTS := -m "faults or exclusive"

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

# The unit tests in parallel; then the tests on the services in parallel, a test file to each process (each test
# has a vhost, a database and a table prefix of its own; the network suite, tests/network, is one such file); then,
# alone, the fault suite and the tests that stop a shared service. The first run that fails stops `make test`. The service runs list their slowest tests.
test: check services
	$(PYTEST) -n $(TEST_WORKERS) $(UNIT_TESTS)
	$(PYTEST) -n $(SERVICE_WORKERS) --dist loadfile --durations=30 $(SHARING_TESTS)
	$(PYTEST) --durations=10 $(ALONE_TESTS)

# The house's rules: the import contracts (setup.cfg [importlinter]), style (ruff.toml), types (setup.cfg [mypy]).
check: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy swarm master workers

unit: $(STAMP)
	$(PYTEST) -n $(TEST_WORKERS) $(UNIT_TESTS)

integration: $(STAMP) services
	$(PYTEST) -n $(SERVICE_WORKERS) --dist loadfile $(SHARING_TESTS)
	$(PYTEST) -m "integration and exclusive"

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
