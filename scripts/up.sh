#!/usr/bin/env bash
# `make up`: deploy the whole mail stack on this machine (single-host inventory), then send a
# clean and a GTUBE mail through port 25 and read the clean one back over IMAPS.
# Safe to run again: the playbook is idempotent and the smoke test uses fresh subjects.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ANSIBLE_VENV:-.venv-ansible}
PYTHON=${PYTHON:-/usr/bin/python3}
# Pinned tools for the deployment (kept out of the project's own .venv); `make up` installs
# them first, this covers running the script directly.
PINS=ansible/requirements-python.txt
if [[ ! -x $VENV/bin/ansible-playbook ]]; then
  echo "up: installing $(tr '\n' ' ' < "$PINS")into $VENV"
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$PINS"
fi

cd ansible
if [[ -s requirements.yml ]] && grep -qE '^\s*-\s' requirements.yml; then
  "../$VENV/bin/ansible-galaxy" collection install -r requirements.yml
fi
echo "up: applying the playbook (inventories/single)"
"../$VENV/bin/ansible-playbook" -i inventories/single site.yml "$@"
cd ..

echo "up: smoke test"
"$VENV/bin/python" scripts/smoke.py
