# mailglue: `make up` deploys and starts the stack on this machine; `make test` runs every test.
# Both install what they need (Debian packages, the virtualenv) and are safe to run twice.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ANSIBLE_VENV := .venv-ansible
ANSIBLE_STAMP := $(ANSIBLE_VENV)/.installed

.PHONY: deps debian-packages venv ansible-venv lint ansible-lint typecheck unit test test-playbook deploy-test bench bench-quick bench-lists bench-auth bench-retries up down clean

deps: debian-packages venv ansible-venv

# host-dns.sh first: apt and pip need a resolver that answers (see the script).
debian-packages:
	bash scripts/host-dns.sh
	bash scripts/install-debian-packages.sh

venv: $(STAMP)

$(STAMP): pyproject.toml | debian-packages
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check --upgrade pip==24.3.1
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Ansible, ansible-lint and yamllint live in their own virtualenv (pinned in
# ansible/requirements-python.txt), apart from the project's dependencies.
ansible-venv: $(ANSIBLE_STAMP)

$(ANSIBLE_STAMP): ansible/requirements-python.txt
	test -x $(ANSIBLE_VENV)/bin/python || $(PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install --quiet --disable-pip-version-check -r ansible/requirements-python.txt
	touch $@

lint: venv ansible-lint
	$(VENV)/bin/ruff check milters lmtp_bridge tests bench
	$(VENV)/bin/ruff format --check milters lmtp_bridge tests bench

ansible-lint: ansible-venv
	cd ansible && ../$(ANSIBLE_VENV)/bin/yamllint -s . && ../$(ANSIBLE_VENV)/bin/ansible-lint
	cd ansible && ../$(ANSIBLE_VENV)/bin/ansible-playbook -i inventories/split \
		--vault-password-file inventories/split/vault-password.example site.yml --syntax-check

typecheck: venv
	$(VENV)/bin/mypy milters lmtp_bridge tests bench

unit: venv
	$(VENV)/bin/pytest -q tests/unit tests/protocol

test: deps lint typecheck
	$(VENV)/bin/pytest -ra -m "not playbook" tests

# The deployment tests that run the playbook again with an admin's change (a DKIM rotation,
# a password reset, PostgreSQL for webmail, moved sockets, refused settings): ~12 minutes on
# top of make test, so a target of their own; CI runs it after make test. Deploys with
# `make up`, runs them against that stack, then stops it.
test-playbook: deps
	bash scripts/up.sh
	MAILGLUE_DEPLOY_REUSE=1 $(VENV)/bin/pytest -ra -m playbook tests/deploy; \
		rc=$$?; bash scripts/down.sh; exit $$rc

# Benchmarks against the peers (installs spamass-milter, clamav-milter, amavisd-new itself).
# Results: bench/results/latest.{json,md,png}. The full grid takes ~35 minutes; then the
# scan memo on a mix with retries (bench/results/retries-latest.md, ~2 minutes).
bench: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench
	$(VPY) -m bench.retries

bench-retries: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench.retries

# A 50-member list post against a one-recipient message: spamd scans per post, fan-out rate.
bench-lists: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench.lists

# What the SPF/DKIM/DMARC checks add: milter CPU and latency, checked vs unchecked.
bench-auth: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench.auth

bench-quick: deps
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(VPY) -m bench --quick

# Deploy the whole stack on this machine (Ansible, single-host inventory) and prove it with
# a test mail; `make down` stops what it started.
up: deps
	bash scripts/up.sh

down:
	bash scripts/down.sh

# Only the deployment test (it is part of `make test` too).
deploy-test: deps
	$(VENV)/bin/pytest -ra tests/deploy

# Debian 12 containers with systemd (podman, runc; tests/multihost/bed.py), one layout after the
# other: `split` (the split inventory on 7 hosts: faults under load, a table per host) and
# `single` (every group on one host with the single inventory's settings, so webmail and lists
# run under systemd too). Each deploys site.yml twice. Not part of `make test`; CI runs it
# after. BED_LAYOUTS=split runs one; MAILGLUE_BED_KEEP=1 leaves the containers running
# (`$(VPY) -m tests.multihost.bed down` removes them).
BED_LAYOUTS ?= split single
.PHONY: test-multihost
test-multihost: deps
	for layout in $(BED_LAYOUTS); do \
		MAILGLUE_MULTIHOST=1 MAILGLUE_BED_LAYOUT=$$layout \
			$(VENV)/bin/pytest -ra -p no:cacheprovider tests/multihost || exit 1; \
	done

clean:
	rm -rf $(VENV) $(ANSIBLE_VENV) .mypy_cache .ruff_cache .pytest_cache
