"""spamd and clamd failover over real loopback sockets: a dropped connection moves on.

A scanner host stopped while it had our message closes the connection without an answer;
the milter then asks the next backend, from the start of the message, instead of giving the
client a 451 (seen on the multi-host bed: 2 of 60 messages got "Spam scanner temporarily
unavailable" with the other scanner up). A backend that is only slow keeps its timeout:
it is not left for another.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest

from milters.common.sockets import ConnectionDropped, InetAddress
from milters.scanners import clamd, spamc

MESSAGE = b"Subject: failover\r\n\r\n" + b"body line\r\n" * 2000
SPAMD_REPLY = (
    b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.5 / 5.0\r\n\r\nX-Spam-Mailglue-Tests: MG_ONE=1.5\r\n"
)


def read_until(conn: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    data = b""
    while not done(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@contextmanager
def backend(answer: Callable[[socket.socket], bytes]) -> Iterator[tuple[InetAddress, list[bytes]]]:
    """One loopback server; `answer` handles each connection and returns what it read."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                received.append(answer(conn))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield InetAddress("127.0.0.1", listener.getsockname()[1]), received
    finally:
        listener.close()


def drop_after_reading(conn: socket.socket) -> bytes:
    return conn.recv(4096)  # then closed, no answer: a stopped scanner


def spamd_answers(conn: socket.socket) -> bytes:
    data = read_until(conn, lambda d: False)  # the client shuts down its side when done
    conn.sendall(SPAMD_REPLY)
    return data


def clamd_answers(conn: socket.socket) -> bytes:
    data = read_until(conn, lambda d: d.endswith(b"\0\0\0\0"))
    conn.sendall(b"stream: OK\0")
    return data


RELEASE = threading.Event()


def never_answers(conn: socket.socket) -> bytes:
    """Reads the request, then holds the connection open without a word (a busy spamd)."""
    data = read_until(conn, lambda d: False)
    RELEASE.wait(10)
    return data


def test_spamd_dropping_the_connection_fails_over_with_the_whole_message() -> None:
    with backend(drop_after_reading) as (first, _), backend(spamd_answers) as (second, seen):
        stream = io.BytesIO(MESSAGE)
        result = spamc.check([first, second], stream, len(MESSAGE), timeout=5)
    assert result.backend == str(second)
    assert result.score == Decimal("1.5")
    assert seen[0].endswith(MESSAGE)  # sent again from the start


def test_clamd_dropping_the_connection_fails_over_with_the_whole_message() -> None:
    with backend(drop_after_reading) as (first, _), backend(clamd_answers) as (second, seen):
        result = clamd.scan([first, second], io.BytesIO(MESSAGE), timeout=5)
    assert result.backend == str(second) and result.signature is None
    assert len(seen[0]) > len(MESSAGE)  # every frame of the message reached the second one


def test_the_last_backend_dropping_the_connection_is_an_error_the_milter_maps() -> None:
    with backend(drop_after_reading) as (only, _):
        # dropped, reset or "not connected": an OSError, which the milter maps to a failure
        with pytest.raises(OSError):
            spamc.check([only], MESSAGE, len(MESSAGE), timeout=5)
        with pytest.raises(OSError):
            clamd.scan([only], MESSAGE, timeout=5)


def test_an_empty_answer_is_a_dropped_connection() -> None:
    def close_at_once(conn: socket.socket) -> bytes:
        data = read_until(conn, lambda d: False)
        return data  # read everything, then close: end of stream, no reset

    with (
        backend(close_at_once) as (only, _),
        pytest.raises(ConnectionDropped, match="spamd closed the connection"),
    ):
        spamc.check([only], MESSAGE, len(MESSAGE), timeout=5)


def test_a_slow_backend_is_not_left_for_the_next() -> None:
    with backend(never_answers) as (slow, _), backend(spamd_answers) as (second, seen):
        try:
            with pytest.raises(TimeoutError):
                spamc.check([slow, second], MESSAGE, len(MESSAGE), timeout=0.5)
        finally:
            RELEASE.set()
    assert seen == []
