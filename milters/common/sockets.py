"""Connecting to backends (spamd, clamd, Cyrus) given in Postfix's address notation.

The notation and its parser live in `lmtp_bridge.address` (`inet:HOST:PORT`, `unix:/PATH`,
the forms an admin already writes in main.cf); this module adds failover across a list. The
socket opener itself is `lmtp_bridge.address.connect`, shared with the LMTP client (which may
not import `milters`).

Failover covers a backend that refuses the connection and one that drops it before its
answer (a scanner host stopped or restarted while it had our message): the exchange starts
over on the next backend. A slow backend is not left for another: its timeout is the budget.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

from lmtp_bridge.address import BackendAddress as Address
from lmtp_bridge.address import BackendAddressError, InetAddress, UnixAddress, connect
from lmtp_bridge.address import parse_backend_address as parse_address
from lmtp_bridge.client import CHUNK_SIZE

# Bytes read and sent at a time, the same for clamd, spamd and LMTP (why: lmtp_bridge.client).
PIECE = CHUNK_SIZE

__all__ = [
    "PIECE",
    "Address",
    "AllBackendsFailed",
    "BackendAddressError",
    "ConnectionDropped",
    "InetAddress",
    "UnixAddress",
    "connect",
    "connect_any",
    "exchange_any",
    "parse_address",
    "rewinder",
]


class AllBackendsFailed(OSError):
    """No backend of a list accepted a connection; the message names each one's failure.

    Not `lmtp_bridge.BackendUnavailable`: that one is one LMTP backend failing mid-dialogue,
    with the replies it had given; this one is failover over spamd/clamd running out.
    """


def connect_any(addresses: Sequence[Address], timeout: float) -> tuple[socket.socket, Address]:
    """Try each backend in order; the first that accepts wins (failover, not balancing)."""
    failures: list[str] = []
    for address in addresses:
        try:
            return connect(address, timeout), address
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
    raise AllBackendsFailed("; ".join(failures) or "no backend configured")


class ConnectionDropped(ConnectionError):
    """The backend closed the connection before it had answered."""


Answer = TypeVar("Answer")


def exchange_any(
    addresses: Sequence[Address],
    timeout: float,
    talk: Callable[[socket.socket], Answer],
    rewind: Callable[[], None],
) -> tuple[Answer, Address]:
    """`talk` with the first backend that accepts; if it drops the connection before its
    answer (reset, broken pipe, end of stream), `rewind` the message and go on to the next.

    Raises AllBackendsFailed when none accepted, else the last backend's error.
    """
    remaining = list(addresses)
    while True:
        sock, address = connect_any(remaining, timeout)
        with sock:
            sock.settimeout(timeout)
            try:
                return talk(sock), address
            except OSError as exc:
                later = remaining[remaining.index(address) + 1 :]
                if not later or not _dropped(exc):
                    raise
                remaining = later
        rewind()


def _dropped(exc: OSError) -> bool:
    """Reset, broken pipe, end of stream, or (after a reset) "not connected" on shutdown."""
    return isinstance(exc, ConnectionError) or exc.errno == errno.ENOTCONN


def rewinder(message: BinaryIO | bytes) -> Callable[[], None]:
    """For `exchange_any`: puts a streamed message back where it started, for the next backend."""
    if isinstance(message, bytes):
        return lambda: None
    start = message.tell()

    def rewind() -> None:
        message.seek(start)

    return rewind
