# mailglue: `make up` deploys and starts the stack on this machine; `make test` runs every test.
# Both install what they need (Debian packages, the virtualenv) and are safe to run twice.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: deps debian-packages venv lint typecheck unit test bench bench-quick up down clean

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
	$(VENV)/bin/ruff check milters lmtp_bridge tests bench
	$(VENV)/bin/ruff format --check milters lmtp_bridge tests bench

typecheck: venv
	$(VENV)/bin/mypy milters lmtp_bridge

unit: venv
	$(VENV)/bin/pytest -q tests/unit tests/protocol

test: deps lint typecheck
	$(VENV)/bin/pytest -ra tests

# Benchmarks against the peers (installs spamass-milter, clamav-milter, amavisd-new itself).
# Results: bench/results/latest.{json,md,png}. The full grid takes ~35 minutes.
bench: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench

bench-quick: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
