"""The harness's milter runs with the malloc settings the mailglue role deploys (issue 17).

The benchmark and the integration tests start the milter through `tests/harness/milter.py`;
the deployment through the role. The memory the benchmark reports is the deployed milter's
only if both give it the same GLIBC_TUNABLES.
"""

from __future__ import annotations

import pytest
import yaml

from tests.harness.milter import ROLE_DEFAULTS, deployed_environment


def test_the_role_hands_large_allocations_back_by_default() -> None:
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    assert defaults["mailglue_milter_malloc_tunables"] == "glibc.malloc.mmap_threshold=65536"


def test_the_harness_milter_gets_the_roles_tunables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv("MAILGLUE_SOMETHING", "kept")
    env = deployed_environment()
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.mmap_threshold=65536"
    assert env["MAILGLUE_SOMETHING"] == "kept"


def test_a_callers_tunables_win_so_runs_can_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "")
    assert deployed_environment()["GLIBC_TUNABLES"] == ""
