"""Backend addresses in Postfix's notation, and connecting with failover across a list.

`inet:127.0.0.1:783`, `inet:[::1]:783` and `unix:/run/spamd.sock` are the forms an admin
already writes in main.cf, so the config uses the same ones.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass


class AddressError(ValueError):
    """An address that is not `inet:HOST:PORT` or `unix:/PATH`."""


class BackendUnavailable(OSError):
    """No backend of a list accepted a connection; the message names each one's failure."""


@dataclass(frozen=True)
class Address:
    family: str  # "inet" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


def parse_address(text: str) -> Address:
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise AddressError(f"{text!r}: expected inet:HOST:PORT or unix:/PATH")
    if kind == "unix":
        if not rest.startswith("/"):
            raise AddressError(f"{text!r}: a unix socket path must be absolute")
        return Address("unix", path=rest)
    if kind != "inet":
        raise AddressError(f"{text!r}: unknown kind {kind!r}, expected inet: or unix:")
    host, sep, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{text!r}: expected inet:HOST:PORT with a port from 1 to 65535")
    return Address("inet", host=host, port=int(port_text))


def connect(address: Address, timeout: float) -> socket.socket:
    if address.family == "unix":
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
