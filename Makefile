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

# The suite runs in two phases. First every test but the `budget` ones on
# $(TEST_WORKERS) pytest-xdist workers: most tests wait on a subprocess, a
# server or a file, and one process left a core idle. --dist loadgroup keeps
# each file that trains a module-scoped run on one worker; runs several files
# read are built once per session (tests/conftest.py), and the workers take
# the longest work first (conftest's order, kept by --no-loadscope-reorder)
# so the last tests handed out are short ones. Then the `budget`
# tests, which check what a run did within a wall-clock budget, in one
# process: with a second worker beside it a budgeted run gets half the CPU
# and its deadline cuts what the test checks. Both phases run; make fails
# if either failed (exit 5 is pytest's "no test selected"). The first phase
# is CPU-bound on 2 cores: 3 workers took 874 s against 2 workers' 875 s.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q
define two_phases
	$(PYTEST) $(2) -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "$(1) not budget"; a=$$?; \
	$(PYTEST) $(2) -n 0 -m "$(1) budget"; b=$$?; \
	[ $$a -eq 0 -o $$a -eq 5 ] && [ $$b -eq 0 -o $$b -eq 5 ]
endef

test: $(STAMP) $(CLUSTER_STAMP)
	$(call two_phases,,--durations=25)

test-quick: $(STAMP)
	$(call two_phases,not slow and not cluster and)

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache
