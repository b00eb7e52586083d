"""Connecting to backends (spamd, clamd, Cyrus) given in Postfix's address notation.

The notation and its parser live in `lmtp_bridge.address` (`inet:HOST:PORT`, `unix:/PATH`,
the forms an admin already writes in main.cf); this module adds failover across a list. The
socket opener itself is `lmtp_bridge.address.connect`, shared with the LMTP client (which may
not import `milters`).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from lmtp_bridge.address import BackendAddress as Address
from lmtp_bridge.address import BackendAddressError, InetAddress, UnixAddress, connect
from lmtp_bridge.address import parse_backend_address as parse_address

__all__ = [
    "Address",
    "AllBackendsFailed",
    "BackendAddressError",
    "InetAddress",
    "UnixAddress",
    "connect",
    "connect_any",
    "parse_address",
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
