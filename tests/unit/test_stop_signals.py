"""The milter daemon's stop rule: the first SIGTERM drains, a second one exits at once."""

from __future__ import annotations

import signal

from milters.scan.daemon import StopSignals


def test_first_signal_drains_second_exits_at_once() -> None:
    calls: list[str] = []
    stop = StopSignals(
        begin_drain=lambda which: calls.append(f"drain {which.name}"),
        on_force=lambda which: calls.append(f"force {which.name}"),
        exit_now=lambda status: calls.append(f"exit {status}"),
    )
    stop(signal.SIGTERM, None)
    assert stop.requested.is_set() and calls == ["drain SIGTERM"]
    stop(signal.SIGINT, None)
    assert calls == ["drain SIGTERM", "force SIGINT", f"exit {128 + signal.SIGINT}"]
