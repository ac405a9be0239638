# Two commands: `make demo` and `make test`. Both create .venv if missing and
# install the project with constraints.txt (torch pinned to the local CPU wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_INSTALL := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-slow lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ibscope run tishby --profile demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
