"""Backend addresses in Postfix's notation: `unix:/path` or `inet:host:port`.

The same spelling an admin already writes in main.cf (`lmtp:unix:/run/cyrus/socket/lmtp` or
`lmtp:inet:mail2.example.org:24`), so config and logs read the same everywhere.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = [
    "BackendAddress",
    "BackendAddressError",
    "InetAddress",
    "UnixAddress",
    "parse_backend_address",
]


class BackendAddressError(ValueError):
    """The text is not a backend address; the message says what is wrong and what is expected."""


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """An LMTP server on a unix-domain socket (Cyrus's default; needs no authentication)."""

    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class InetAddress:
    """An LMTP server on TCP (Cyrus needs `lmtpd -a` or SASL for this)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


BackendAddress = UnixAddress | InetAddress

_EXPECTED = "expected 'unix:/path/to/socket' or 'inet:host:port' (IPv6: 'inet:[::1]:24')"


def parse_backend_address(text: str) -> BackendAddress:
    """Parse `unix:/path`, `inet:host:port` or `inet:[v6]:port`; an `lmtp:` prefix is allowed."""
    raw = text.strip()
    spec = raw[len("lmtp:") :] if raw.startswith("lmtp:") else raw
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise BackendAddressError(f"backend address {text!r}: no type prefix; {_EXPECTED}")
    if kind == "unix":
        if not rest or any(c in rest for c in "\0\r\n"):
            raise BackendAddressError(f"backend address {text!r}: empty or invalid socket path")
        return UnixAddress(rest)
    if kind == "inet":
        return _parse_inet(text, rest)
    raise BackendAddressError(f"backend address {text!r}: unknown type {kind!r}; {_EXPECTED}")


def _parse_inet(text: str, rest: str) -> InetAddress:
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise BackendAddressError(f"backend address {text!r}: unclosed '[' or no ':port'")
        port_text = port_text[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise BackendAddressError(f"backend address {text!r}: no port; {_EXPECTED}")
        if ":" in host:
            raise BackendAddressError(
                f"backend address {text!r}: IPv6 addresses need brackets, e.g. 'inet:[::1]:24'"
            )
    if not host or any(c.isspace() or c in "\0/" for c in host):
        raise BackendAddressError(f"backend address {text!r}: empty or invalid host {host!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BackendAddressError(
            f"backend address {text!r}: port must be a number 1-65535, got {port_text!r}"
        )
    return InetAddress(host, int(port_text))


def connect(address: BackendAddress, timeout: float, *, nodelay: bool = False) -> socket.socket:
    """A connected socket to one backend (`timeout` also set on it), or OSError.

    The one copy for every backend mailglue talks to (LMTP here; spamd, clamd and the milter's
    own listener through `milters.common.sockets`), kept in `lmtp_bridge` because that package
    may import nothing from `milters`. `nodelay` for protocols that pipeline small commands.
    """
    if isinstance(address, UnixAddress):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address.path)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
