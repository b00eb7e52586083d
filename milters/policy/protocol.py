"""Sans-IO codec for Postfix's SMTP access policy delegation protocol.

A request is `name=value` lines ended by an empty line; the reply is one `action=...` line and
an empty line. The parser takes bytes in whatever pieces the socket delivers, so the server
never cares where a read stopped, and it bounds what a peer can make us buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

__all__ = [
    "DEFAULT_MAX_ATTRIBUTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "ProtocolError",
    "RequestParser",
    "encode_reply",
]

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024
DEFAULT_MAX_ATTRIBUTES = 100

PolicyRequest = Mapping[str, str]


class ProtocolError(ValueError):
    """The peer broke the protocol; answer safely and drop the connection."""


class RequestParser:
    """Incremental request parser; after a ProtocolError it stays broken."""

    def __init__(
        self,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
    ) -> None:
        self._max_bytes = max_request_bytes
        self._max_attributes = max_attributes
        self._buf = bytearray()
        self._attrs: dict[str, str] = {}
        self._size = 0  # bytes of complete lines of the request being assembled
        self._broken: ProtocolError | None = None

    @property
    def has_partial(self) -> bool:
        """True while a request has started but not ended (EOF now would cut it)."""
        return bool(self._buf) or bool(self._attrs)

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Add received bytes; return the requests they completed, in order."""
        if self._broken is not None:
            raise self._broken
        self._buf += data
        done: list[dict[str, str]] = []
        try:
            while True:
                end = self._buf.find(b"\n")
                if end < 0:
                    if self._size + len(self._buf) > self._max_bytes:
                        self._fail(f"request longer than {self._max_bytes} bytes")
                    break
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                self._size += end + 1
                if self._size > self._max_bytes:
                    self._fail(f"request longer than {self._max_bytes} bytes")
                request = self._line(line[:-1] if line.endswith(b"\r") else line)
                if request is not None:
                    done.append(request)
        except ProtocolError as exc:
            self._broken = exc
            raise
        return done

    def _line(self, line: bytes) -> dict[str, str] | None:
        if not line:
            if not self._attrs:
                self._fail("empty request (a blank line with no attributes)")
            request, self._attrs, self._size = self._attrs, {}, 0
            return request
        name, sep, value = line.partition(b"=")
        if not sep or not name:
            self._fail(f"not a name=value line: {line[:60]!r}")
        if b"\0" in line:
            self._fail("NUL byte in request")
        key = name.decode("ascii", "replace")
        if key in self._attrs:
            self._fail(f"attribute {key!r} given twice")
        if len(self._attrs) >= self._max_attributes:
            self._fail(f"more than {self._max_attributes} attributes")
        # Postfix sends UTF-8 (SMTPUTF8) or ASCII; undecodable bytes can match nothing.
        self._attrs[key] = value.decode("utf-8", "replace")
        return None

    def _fail(self, why: str) -> NoReturn:
        raise ProtocolError(why)


def encode_reply(action: str) -> bytes:
    """One reply; a newline inside the action would forge a second line, so it is flattened."""
    flat = " ".join(action.replace("\r", " ").replace("\n", " ").split())
    return b"action=" + flat.encode("utf-8") + b"\n\n"
