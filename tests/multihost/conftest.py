"""The reconciliation table: what each host did, printed after the multi-host tests."""

from __future__ import annotations

import pytest

from tests.multihost.load import COLUMNS, Reconciliation

# (host, check, outcome), appended by the tests as they go: a failed assert still leaves its row.
RESULTS: list[tuple[str, str, str]] = []
# (fault, counts), one row per load the tests ran.
RECONCILIATION: list[tuple[str, Reconciliation]] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECONCILIATION:
        terminalreporter.section("multi-host load: reconciliation")
        width = max(len(fault) for fault, _ in RECONCILIATION)
        terminalreporter.write_line(f"{'fault':<{width}} " + " ".join(COLUMNS))
        for fault, counts in RECONCILIATION:
            cells = " ".join(f"{n:>{len(c)}}" for n, c in zip(counts.row(), COLUMNS, strict=True))
            terminalreporter.write_line(f"{fault:<{width}} {cells}")
        terminalreporter.write_line(
            "first attempts, then after the senders sent every 4xx again once the fault was over"
        )
    if not RESULTS:
        return
    terminalreporter.section("multi-host reconciliation")
    width = max(len(host) for host, _, _ in RESULTS)
    check_width = max(len(check) for _, check, _ in RESULTS)
    for host, check, outcome in RESULTS:
        terminalreporter.write_line(f"{host:<{width}}  {check:<{check_width}}  {outcome}")
