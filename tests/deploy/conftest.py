"""The deployment test applies the Ansible playbook to this machine (root, Debian)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deploy: applies the Ansible playbook to this machine and checks the real ports",
    )
