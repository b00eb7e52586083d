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
from collections.abc import Callable

import Milter
import milter as libmilter  # type: ignore[import-not-found]  # pymilter's C module

from milters.common.jsonlog import EventLog
from milters.common.lifecycle import sd_notify, wait_listening
from milters.common.prometheus import serve as serve_metrics
from milters.common.sockets import connect, parse_address
from milters.scan.config import MilterConfig, pymilter_socket
from milters.scan.metrics import MilterMetrics
from milters.scan.scanner import Scanner
from milters.scan.service import MilterService, make_deliverer, release
from milters.scan.session import MILTER_FLAGS, ScanMilter


def stop_libmilter(listen: str) -> None:
    """Close libmilter's listener now; sessions in progress continue.

    smfi_stop() waits for a lock the listener holds during its poll() (up to 5 s), so it runs
    in a thread of its own while a connection to the listener makes that poll() return early
    (libmilter drops that connection unserved).
    """
    stopper = threading.Thread(target=libmilter.stop, name="smfi_stop", daemon=True)
    stopper.start()
    address = parse_address(listen)
    while stopper.is_alive():
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
    """The first SIGTERM/SIGINT starts a drain; a second one during it exits at once.

    `begin_drain` and `exit_now` are injected so the rule is tested without a process to kill;
    `exit_now` defaults to `os._exit`, since a normal exit would wait for the threads still
    delivering, which is exactly what the admin asked not to wait for.
    """

    def __init__(
        self,
        begin_drain: Callable[[signal.Signals], None],
        on_force: Callable[[signal.Signals], None],
        exit_now: Callable[[int], object] = os._exit,
    ) -> None:
        self.requested = threading.Event()
        self._begin_drain = begin_drain
        self._on_force = on_force
        self._exit_now = exit_now

    def __call__(self, signum: int, _frame: object) -> None:
        which = signal.Signals(signum)
        if not self.requested.is_set():
            self.requested.set()
            self._begin_drain(which)
            return
        self._on_force(which)
        self._exit_now(128 + signum)  # what the shell reports for a death by this signal


def run(config: MilterConfig) -> None:
    """Serve until SIGTERM/SIGINT, then let transactions in flight finish (`shutdown_grace`).

    SIGHUP reloads the config. With `metrics_listen`, Prometheus metrics are served too.
    """
    metrics = MilterMetrics() if config.metrics_listen is not None else None
    log = EventLog(config.log_file)
    service = MilterService(config, Scanner(config), log, make_deliverer(config), metrics=metrics)
    Milter.factory = lambda: ScanMilter(service)
    Milter.set_flags(MILTER_FLAGS)
    if metrics is not None and config.metrics_listen is not None:
        serve_metrics(config.metrics_listen, metrics.registry)

    def begin_drain(which: signal.Signals) -> None:
        sd_notify("STOPPING=1")
        service.emit(
            "stopping", daemon="milter", signal=which.name, in_flight=service.in_flight.count
        )
        stop_libmilter(config.listen)

    def force(which: signal.Signals) -> None:
        service.emit(
            "shutdown",
            daemon="milter",
            drained=False,
            abandoned=service.in_flight.count,
            forced=which.name,
        )

    def reload(_signum: int, _frame: object) -> None:
        sd_notify("RELOADING=1")
        service.reload()
        sd_notify("READY=1")

    stop = StopSignals(begin_drain, force)
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
        drained = service.in_flight.wait_idle(service.config.grace)
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
