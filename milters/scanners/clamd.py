"""A small clamd INSTREAM client: a pure reply parser and a socket shell.

INSTREAM sends the message as length-prefixed chunks, so clamd never needs to read our
spool files (no shared filesystem or permissions between the milter and clamd).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from milters.common.sockets import (
    PIECE,
    Address,
    ConnectionDropped,
    exchange_any,
    rewinder,
)

MAX_REPLY_BYTES = 64 * 1024


class ClamdError(Exception):
    """clamd answered with an error, or not at all in the protocol."""


class ClamdSizeLimit(ClamdError):
    """The message exceeded clamd's StreamMaxLength: it was not (fully) scanned."""


@dataclass(frozen=True)
class ClamdResult:
    signature: str | None  # None: clean
    backend: str


def parse_reply(reply: bytes) -> str | None:
    """`stream: OK` -> None; `stream: Eicar-Test-Signature FOUND` -> the signature name."""
    text = reply.rstrip(b"\0\r\n").decode("utf-8", "replace")
    _, _, status = text.partition(": ")
    if status == "OK":
        return None
    if status.endswith(" FOUND"):
        return status[: -len(" FOUND")] or "unnamed signature"
    if "size limit exceeded" in text:
        raise ClamdSizeLimit(text)
    raise ClamdError(text or "empty reply")


def frame(chunk: bytes) -> bytes:
    return struct.pack("!L", len(chunk)) + chunk


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REPLY_BYTES:
            raise ClamdError("clamd reply too long")
    return data


def scan(
    backends: Sequence[Address],
    message: BinaryIO | bytes,
    timeout: float,
    prefix: Iterable[bytes] = (),
) -> ClamdResult:
    """Scan one message; raises BackendUnavailable, OSError, ClamdError or ClamdSizeLimit."""
    parts = tuple(prefix)

    def talk(sock: socket.socket) -> bytes:
        sock.sendall(b"zINSTREAM\0")
        try:
            for part in parts:
                sock.sendall(frame(part))
            if isinstance(message, bytes):
                for start in range(0, len(message), PIECE):
                    sock.sendall(frame(message[start : start + PIECE]))
            else:
                while chunk := message.read(PIECE):
                    sock.sendall(frame(chunk))
            sock.sendall(frame(b""))
        except (BrokenPipeError, ConnectionResetError):
            # clamd stops reading at StreamMaxLength and says why before closing.
            pass
        reply = _read_reply(sock)
        if not reply:
            raise ConnectionDropped("clamd closed the connection without a reply")
        return reply

    reply, address = exchange_any(backends, timeout, talk, rewinder(message))
    return ClamdResult(parse_reply(reply), str(address))
