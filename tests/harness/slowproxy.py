"""A TCP proxy that holds back the upstream's answer: a real backend made slow on purpose.

Tests of "a transaction in flight when SIGTERM arrives" need a scan that takes seconds;
putting this in front of the real spamd keeps the real answer, only later.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .process import LOOPBACK, free_port


class SlowProxy:
    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self.connections = 0
        self._listener = socket.create_server((LOOPBACK, self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"inet:{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as upstream:
            # client -> upstream at once (until the client half-closes)
            while chunk := client.recv(65536):
                upstream.sendall(chunk)
            upstream.shutdown(socket.SHUT_WR)
            time.sleep(self.delay)
            while chunk := upstream.recv(65536):
                client.sendall(chunk)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
