"""Daemon lifecycle helpers: systemd readiness, and counting transactions in flight.

libmilter's `smfi_main` owns the milter's signals: it blocks SIGHUP/SIGTERM/SIGINT in the
thread that calls it and waits for them in a thread of its own, where SIGHUP, like SIGTERM,
stops the milter. So the milter runs libmilter in a secondary thread, and the main thread
(where Python runs signal handlers, and which the kernel prefers for a process-directed
signal) keeps those signals unblocked: SIGHUP then reloads and SIGTERM drains, both in Python.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from milters.common.sockets import Address, connect


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) our state, e.g. `READY=1`; a no-op without NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(path)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True


def wait_listening(address: Address, timeout: float, alive: threading.Thread) -> bool:
    """Wait until `address` accepts a connection (libmilter has bound it), or `alive` died.

    libmilter offers no "listening now" hook through pymilter; connecting is the proof.
    """
    deadline = time.monotonic() + timeout
    while alive.is_alive() and time.monotonic() < deadline:
        try:
            connect(address, 1.0).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class InFlight:
    """A count of transactions in progress that a shutdown can wait to reach zero."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    @property
    def count(self) -> int:
        return self._count

    def enter(self) -> None:
        with self._cond:
            self._count += 1

    def leave(self) -> None:
        with self._cond:
            self._count -= 1
            if self._count <= 0:
                self._count = 0
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True if nothing is in flight (now or before `timeout` seconds pass)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout)
