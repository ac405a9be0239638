# Two commands: `make demo` and `make test`. Both create .venv if missing and
# install the project with constraints.txt (torch pinned to the local CPU wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_INSTALL := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-slow lint bench clean install docs

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e '.[dev,ray,lightning,tensorboard,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ibscope run tishby --profile demo --out runs/demo

# pytest exits 5 when it collected no test: that is a failure here, said plainly.
NO_TESTS := if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): failing." >&2; exit 1; fi; exit $$rc

test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; $(NO_TESTS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow; rc=$$?; $(NO_TESTS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

# The documentation site (mkdocs.yml): docs/*.md and the API reference from the
# docstrings; --strict makes every warning (a broken link or anchor, a `:::`
# naming a function that no longer exists) an error.
docs: $(STAMP)
	$(PIP_INSTALL) -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

# The benchmark scripts at small settings (benchmarks/run_all.py, about 10-15 min on 2 cores):
# every figure printed next to its reference from the same run, and the generated block of
# benchmarks/RESULTS.md replaced by this run's output.
bench: $(STAMP)
	PYTHONPATH=src $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
