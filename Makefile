# Two commands: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLUSTER_STAMP := $(VENV)/.installed-cluster

.PHONY: demo test test-quick bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/autopilot run digits --budget 2m

# The cluster extras (Ray, a PostgreSQL driver) go into the same .venv for
# the tests only, with their own stamp: `make demo` never installs them.
$(CLUSTER_STAMP): $(STAMP) requirements-cluster.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-cluster.txt
	touch $(CLUSTER_STAMP)

# Two pytest-xdist workers: most tests wait on a subprocess, a server or a
# budget, so two at a time fill two cores. --dist loadgroup keeps each file
# that trains a module-scoped run on one worker (its xdist_group mark); runs
# that several files read are built once per session (tests/conftest.py).
TEST_WORKERS ?= 2

test: $(STAMP) $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster" -n $(TEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache
