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

# pytest-xdist workers: 0 runs the suite in one process. With 2, budgeted
# runs get half the CPU and on a loaded 2-core machine the end-to-end run
# was cut by its deadline, so the default stays 0 until that is solved.
# --dist loadgroup keeps each file that trains a module-scoped run on one
# worker; runs several files read are built once per session (tests/conftest.py).
TEST_WORKERS ?= 0

test: $(STAMP) $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster" -n $(TEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache
