"""The milter daemon's stop rule: the first SIGTERM drains, a second one ends the drain."""

from __future__ import annotations

import signal
import threading
import time

from milters.common.lifecycle import InFlight
from milters.scan.daemon import StopSignals, drain


def test_the_handler_only_records_what_was_asked() -> None:
    stop = StopSignals()
    stop(signal.SIGTERM, None)
    assert stop.requested.is_set() and not stop.forced.is_set()
    assert stop.first is signal.SIGTERM and stop.second is None
    stop(signal.SIGINT, None)
    assert stop.forced.is_set() and stop.second is signal.SIGINT


def test_drain_ends_when_the_last_transaction_leaves() -> None:
    in_flight = InFlight()
    in_flight.enter()
    threading.Timer(0.3, in_flight.leave).start()
    assert drain(in_flight, 30.0, StopSignals()) is True


def test_drain_gives_up_after_the_grace() -> None:
    in_flight = InFlight()
    in_flight.enter()
    assert drain(in_flight, 0.3, StopSignals()) is False


def test_a_second_signal_ends_the_drain_without_waiting_for_the_grace() -> None:
    in_flight = InFlight()
    in_flight.enter()
    stop = StopSignals()
    stop(signal.SIGTERM, None)
    threading.Timer(0.3, stop, args=(signal.SIGTERM, None)).start()
    started = time.monotonic()
    assert drain(in_flight, 60.0, stop) is False
    assert time.monotonic() - started < 10  # the grace was 60 s
