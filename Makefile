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

test: $(STAMP) $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -q --durations=25

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster"

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache
