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

# The offline demo opens the browser playground at http://localhost:8080/playground/
# (BARK_PLAYGROUND=false make run turns it off; servers started any other way keep it off).
run: export BARK_PLAYGROUND ?= true
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

# Known vulnerabilities in the locked dependencies (requirements.lock), from PyPI's advisory data.
# pip-audit reports whether it reached its service (scripts/audit.py reads its report): where it could
# not, this says "SKIPPED, not passed" instead of claiming a clean result. No host is named here.
.PHONY: audit lock
audit: install
	$(PY) scripts/audit.py requirements.lock

# requirements.lock: the installed venv, pinned (the project itself left out; torch's local
# version label dropped, since advisories name public versions).
lock: install
	{ echo "# pip freeze of .venv after 'make install' (make lock); audited by 'make audit'"; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^bark-kserve' | sed 's/+cpu$$//'; } > requirements.lock
