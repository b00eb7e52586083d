"""The reconciliation table: what each host did, printed after the multi-host tests."""

from __future__ import annotations

import pytest

# (host, check, outcome), appended by the tests as they go: a failed assert still leaves its row.
RESULTS: list[tuple[str, str, str]] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("multi-host reconciliation")
    width = max(len(host) for host, _, _ in RESULTS)
    check_width = max(len(check) for _, check, _ in RESULTS)
    for host, check, outcome in RESULTS:
        terminalreporter.write_line(f"{host:<{width}}  {check:<{check_width}}  {outcome}")
