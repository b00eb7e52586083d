"""The scan milter as a daemon: libmilter's thread, signals, and the drain at shutdown.

Kept apart from the pymilter callbacks (session.py): this module owns the process (what runs
where, what a signal does), the session owns one SMTP connection.

Signals (see milters/common/lifecycle.py for why libmilter runs in a thread of its own):
- SIGTERM/SIGINT: stop listening, let transactions in flight finish (`shutdown_grace`);
- a second SIGTERM/SIGINT during that drain: exit at once (an admin who asks twice means it);
- SIGHUP: reload the config.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import Milter
import milter as libmilter  # type: ignore[import-not-found]  # pymilter's C module

from milters.common.jsonlog import EventLog
from milters.common.lifecycle import InFlight, sd_notify, wait_listening
from milters.common.sockets import connect, parse_address
from milters.scan.config import MilterConfig, pymilter_socket
from milters.scan.scanner import Scanner
from milters.scan.service import MilterService, make_deliverer, release
from milters.scan.session import MILTER_FLAGS, ScanMilter


def stop_libmilter(listen: str, give_up: threading.Event | None = None) -> None:
    """Close libmilter's listener now; sessions in progress continue.

    smfi_stop() waits for a lock the listener holds during its poll() (up to 5 s), so it runs
    in a thread of its own while a connection to the listener makes that poll() return early
    (libmilter drops that connection unserved).
    """
    stopper = threading.Thread(target=libmilter.stop, name="smfi_stop", daemon=True)
    stopper.start()
    address = parse_address(listen)
    while stopper.is_alive() and not (give_up is not None and give_up.is_set()):
        with contextlib.suppress(OSError):
            connect(address, 0.5).close()
        stopper.join(0.05)


def _serve_milter(listen: str, failure: list[BaseException]) -> None:
    """libmilter's main loop (in its own thread, see milters/common/lifecycle.py for why)."""
    try:
        Milter.runmilter("mailglue", pymilter_socket(listen), 600)
    except BaseException as exc:
        failure.append(exc)


class StopSignals:
    """The first SIGTERM/SIGINT asks for a drain; a second one during it asks to exit at once.

    The handler only records what was asked: Python runs it in the main thread between two
    bytecodes, possibly inside a log write holding the log's lock, so writing a log line or
    stopping libmilter from here could deadlock. The main thread acts on it (`run`).
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.forced = threading.Event()
        self.first: signal.Signals | None = None
        self.second: signal.Signals | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        which = signal.Signals(signum)
        if not self.requested.is_set():
            self.first = which
            self.requested.set()
        else:
            self.second = which
            self.forced.set()


def drain(in_flight: InFlight, grace: float, stop: StopSignals) -> bool:
    """Wait for the transactions in flight (True when none is left), at most `grace` seconds,
    and not at all once a second signal asks to stop now."""
    deadline = time.monotonic() + grace
    while not stop.forced.is_set():
        remaining = deadline - time.monotonic()
        if in_flight.wait_idle(max(0.0, min(0.2, remaining))):
            return True
        if remaining <= 0:
            return False
    return in_flight.count == 0


def run(config: MilterConfig) -> None:
    """Serve until SIGTERM/SIGINT, then let transactions in flight finish (`shutdown_grace`).

    SIGHUP reloads the config. With `metrics_listen`, Prometheus metrics are served too.
    """
    metrics = None
    if config.metrics_listen is not None:
        # Imported only here: prometheus_client costs ~1.5 MB of memory when metrics are off.
        from milters.common.prometheus import serve as serve_metrics
        from milters.scan.metrics import MilterMetrics

        metrics = MilterMetrics()
        serve_metrics(config.metrics_listen, metrics.registry)
    log = EventLog(config.log_file)
    deliverer = make_deliverer(config, log)
    service = MilterService(config, Scanner(config), log, deliverer, metrics=metrics)
    Milter.factory = lambda: ScanMilter(service)
    Milter.set_flags(MILTER_FLAGS)

    def reload(_signum: int, _frame: object) -> None:
        sd_notify("RELOADING=1")
        service.reload()
        sd_notify("READY=1")

    stop = StopSignals()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    failure: list[BaseException] = []
    thread = threading.Thread(
        target=_serve_milter, args=(config.listen, failure), name="libmilter", daemon=True
    )
    thread.start()
    try:
        if wait_listening(parse_address(config.listen), 60, thread):
            service.emit(
                "startup",
                daemon="milter",
                listen=config.listen,
                config=config.source,
                shadow=config.shadow,
                metrics=str(config.metrics_listen) if config.metrics_listen else None,
            )
            sd_notify("READY=1")
        # smfi_stop closes the listening socket at once, but smfi_main returns only at its
        # next poll tick (up to 5 s): what we wait for is the transactions, not libmilter.
        while thread.is_alive() and not stop.requested.is_set():
            thread.join(0.5)
        if stop.first is not None:
            sd_notify("STOPPING=1")
            service.emit(
                "stopping",
                daemon="milter",
                signal=stop.first.name,
                in_flight=service.in_flight.count,
            )
            stop_libmilter(config.listen, give_up=stop.forced)
        drained = drain(service.in_flight, service.config.grace, stop)
        if stop.second is not None:
            service.emit(
                "shutdown",
                daemon="milter",
                drained=False,
                abandoned=service.in_flight.count,
                forced=stop.second.name,
            )
            service.log.close()
            # A normal exit would wait for the threads still delivering: exactly what the
            # admin asked not to wait for. 128 + N is what a shell reports for signal N.
            os._exit(128 + stop.second)
        service.emit(
            "shutdown",
            daemon="milter",
            drained=drained,
            abandoned=service.in_flight.count,
        )
    finally:
        release(service.runtime())
        service.log.close()
    if failure:
        raise failure[0]
