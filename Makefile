# The two commands of the README: `make run` (install + serve the offline demo) and `make test`.
# CPU installs pin torch==2.13.0 (a CPU build); the Docker image installs a CUDA build instead.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install tools run test lint manifests

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# helm, promtool and manifest validators for the deployment and monitoring tests.
tools: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/install-tools.sh

run: install
	$(PY) -m model_server $(ARGS)

test: install tools
	PATH=$(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

manifests: tools
	PATH=$(CURDIR)/.tools/bin:$$PATH bash scripts/render-manifests.sh
