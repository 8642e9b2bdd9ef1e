# The two set-up commands of the README: `make demo` and `make test`.
# Each creates or updates its own virtualenv in .venv first (idempotent: pip runs
# again only when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.stamp-install

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

.PHONY: venv demo test bench
venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cfbox-watch demo $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m cfbox_watch.bench $(BENCH_ARGS)
