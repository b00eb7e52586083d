"""The deployment tests apply the Ansible playbook to this machine (root, Debian) once for the
whole package; test_deploy checks the deployment, test_journeys walks the users' journeys."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.browser import browser  # noqa: F401  (the fixture, for every journey)
from tests.deploy.mailuser import RemoteMx, outside_mx, relay_address
from tests.deploy.stack import ROOT, checked_stack, deploy_and_check, ensure_ansible, inventory_vars


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deploy: applies the Ansible playbook to this machine and checks the real ports",
    )


@pytest.fixture(scope="package")
def deployed() -> Iterator[dict[str, Any]]:
    if os.environ.get("MAILGLUE_DEPLOY_REUSE") == "1":
        # Iterating on the checks below: skip the playbook runs, use what is deployed.
        ensure_ansible()
        yield checked_stack(inventory_vars())
        return
    try:
        yield deploy_and_check()
    finally:
        # Leave the machine as we found it: the deployed daemons (rsyslogd on /dev/log among
        # them) must not run on under the rest of the suite. `make up` starts them again.
        subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], check=False, timeout=120)


@pytest.fixture(scope="package")
def remote_mx(deployed: dict[str, Any]) -> Iterator[RemoteMx]:
    with outside_mx(*relay_address(deployed["vars"])) as remote:
        yield remote
