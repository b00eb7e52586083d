"""A ManageSieve client (RFC 5804) for tests: what a mail client's filter editor does.

Only the commands a user's journey needs: STARTTLS, AUTHENTICATE "PLAIN", PUTSCRIPT, GETSCRIPT,
SETACTIVE (an empty name deactivates), LISTSCRIPTS, DELETESCRIPT. Cyrus's own `sieveshell`
gives up on this TLS-only server when run without a terminal, so the tests speak the protocol.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl

from tests.harness.smtp import tls_context


class SieveError(Exception):
    """The server answered NO or BYE."""


class ManageSieve:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4190,
        timeout: float = 30,
        source: str | None = None,
    ) -> None:
        self._sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self._buffer = b""
        self._response()  # capabilities
        self._command(b"STARTTLS")
        self._sock = tls_context().wrap_socket(self._sock)
        self._buffer = b""
        self._response()  # capabilities again, now with SASL mechanisms

    def __enter__(self) -> ManageSieve:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, SieveError):
            self._command(b"LOGOUT")
        self._sock.close()

    def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self._command(f'AUTHENTICATE "PLAIN" "{token}"'.encode())

    def put(self, name: str, script: str) -> None:
        data = script.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        self._command(f'PUTSCRIPT "{name}" {{{len(data)}+}}\r\n'.encode() + data)

    def activate(self, name: str) -> None:
        self._command(f'SETACTIVE "{name}"'.encode())

    def get(self, name: str) -> str:
        self._sock.sendall(f'GETSCRIPT "{name}"\r\n'.encode())
        size = self._readline()  # {N}
        assert size.startswith(b"{") and size.endswith(b"}"), size
        length = int(size[1:-1])
        while len(self._buffer) < length:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise SieveError("connection closed")
            self._buffer += chunk
        script, self._buffer = self._buffer[:length], self._buffer[length:]
        self._response()
        return script.decode()

    def delete(self, name: str) -> None:
        self._command(f'DELETESCRIPT "{name}"'.encode())

    def scripts_with_state(self) -> list[tuple[str, bool]]:
        """Each script's name and whether it is the active one."""
        lines = self._command(b"LISTSCRIPTS")
        return [
            (line.split(b'"')[1].decode(), line.rstrip().endswith(b"ACTIVE"))
            for line in lines
            if line.startswith(b'"')
        ]

    def _command(self, line: bytes) -> list[bytes]:
        self._sock.sendall(line + b"\r\n")
        return self._response()

    def _readline(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise SieveError("connection closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _response(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self._readline()
            if line.startswith(b"OK"):
                return lines
            if line.startswith((b"NO", b"BYE")):
                raise SieveError(line.decode(errors="replace"))
            lines.append(line)
