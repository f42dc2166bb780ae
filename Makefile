# Dockyard developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup serve test lint bench

setup:
	scripts/setup.sh

serve: setup
	$(VENV)/bin/dockyard serve

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

lint:
	$(VENV)/bin/ruff check .

bench: setup
	@set -e; for f in bench/*.py; do \
		[ -e "$$f" ] || continue; \
		echo "-----> $$f"; \
		$(PY) "$$f"; \
	done
