"""The deployment tests apply the Ansible playbook to this machine (root, Debian) once for the
whole package; test_deploy checks the deployment, test_journeys walks the users' journeys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.browser import browser  # noqa: F401  (the fixture, for every journey)
from tests.deploy.mailuser import RemoteMx, relay_address
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
    host, port = relay_address(deployed["vars"])
    directory = Path(tempfile.mkdtemp(prefix="remote-mx-"))
    directory.chmod(0o777)  # smtp-sink drops to nobody
    sink = subprocess.Popen(
        [
            "/usr/sbin/smtp-sink",
            "-u",
            "nobody",
            "-d",
            f"{directory}/%H%M%S.",
            f"{host}:{port}",
            "64",
        ]
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            assert sink.poll() is None and time.monotonic() < deadline, "smtp-sink did not start"
            time.sleep(0.1)
    subprocess.run(["postqueue", "-f"], check=False)
    try:
        yield RemoteMx(directory)
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
