"""Connecting to backends (spamd, clamd, Cyrus) given in Postfix's address notation.

The notation and its parser live in `lmtp_bridge.address` (`inet:HOST:PORT`, `unix:/PATH`,
the forms an admin already writes in main.cf); this module adds failover across a list.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from lmtp_bridge.address import BackendAddress as Address
from lmtp_bridge.address import BackendAddressError as AddressError
from lmtp_bridge.address import InetAddress, UnixAddress
from lmtp_bridge.address import parse_backend_address as parse_address

__all__ = [
    "Address",
    "AddressError",
    "BackendUnavailable",
    "InetAddress",
    "UnixAddress",
    "connect",
    "connect_any",
    "parse_address",
]


class BackendUnavailable(OSError):
    """No backend of a list accepted a connection; the message names each one's failure."""


def connect(address: Address, timeout: float) -> socket.socket:
    if isinstance(address, UnixAddress):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address.path)
        except OSError:
            sock.close()
            raise
        return sock
    return socket.create_connection((address.host, address.port), timeout=timeout)


def connect_any(addresses: Sequence[Address], timeout: float) -> tuple[socket.socket, Address]:
    """Try each backend in order; the first that accepts wins (failover, not balancing)."""
    failures: list[str] = []
    for address in addresses:
        try:
            return connect(address, timeout), address
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
    raise BackendUnavailable("; ".join(failures) or "no backend configured")
