# The README's contract: `make demo` and `make test` work on a fresh machine (Python 3.11, pip, make).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fedcheck demo

test: $(STAMP)
	$(VENV)/bin/ruff check fedcheck tests
	$(VENV)/bin/mypy fedcheck
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check fedcheck tests
	$(VENV)/bin/mypy fedcheck

proto: $(STAMP)
	$(PY) -m fedcheck.rpc.protogen

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m pip install --quiet --no-deps 'openmined.psi>=2,<3'
	$(PY) -m fedcheck bench psi
	$(PY) -m fedcheck bench similarity

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
