# The two commands (README): `make demo` and `make test`. Both set up everything they need on a
# fresh machine: a virtualenv in .venv with the project and its extras, and (for tests) the real
# kubectl and helm binaries in .tools/bin and reachable Postgres and Redis servers.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test check bench soak setup clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(INSTALLED)

setup: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/ergon demo

test: $(INSTALLED)
	$(BIN)/python scripts/test.py $(ARGS)

check: $(INSTALLED)
	$(BIN)/python scripts/test.py --only static

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks $(ARGS)

# The operator soak (issue 14): 20 minutes of FlowRuns under operator kills, pod deletions and a
# Postgres outage; writes benchmarks/SOAK.md. Not part of `make test`. ARGS="--quick" for 3 min.
soak: $(INSTALLED)
	$(BIN)/python -m benchmarks.soak $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache

include kind.mk
