"""The message as it goes on the wire after DATA: CRLF line ends, dot-stuffed, dot-terminated.

Sans-IO and incremental, so a 50 MB message can be streamed in chunks; the state carried between
chunks (a CR that may start a CRLF, whether we are at the start of a line) is what makes
dot-stuffing correct across chunk boundaries.

Line-end policy: CRLF and bare LF each end a line and go out as CRLF. A bare CR (one not followed
by LF) is dropped: leaving it would let a server that treats a lone CR as a line end see a
`\\r.\\r` sequence as the end of data (SMTP smuggling), and turning it into a line break would
split headers (`Subject: x\\r\\r\\n` would end the header block).
"""

from __future__ import annotations

__all__ = ["BodyEncoder", "encode_body", "has_8bit"]

TERMINATOR = b".\r\n"


def has_8bit(data: bytes) -> bool:
    """True if any byte is above 127 (decides BODY=8BITMIME)."""
    return not data.isascii()


class BodyEncoder:
    """Feed raw message chunks, send what comes out, then send `finish()`."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._held_cr = False
        self._finished = False

    def feed(self, chunk: bytes) -> bytes:
        """Encode one chunk; may hold back a trailing CR until the next chunk shows what follows."""
        if self._finished:
            raise RuntimeError("BodyEncoder.feed() after finish()")
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            self._held_cr = True
            chunk = chunk[:-1]
        if not chunk:
            return b""
        data = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"")
        if not data:
            return b""
        if self._at_line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\n.", b"\n..")
        self._at_line_start = data.endswith(b"\n")
        return data.replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        """End the body: a last CRLF if the message lacked one, then the lone dot."""
        if self._finished:
            raise RuntimeError("BodyEncoder.finish() called twice")
        self._finished = True
        self._held_cr = False  # a CR at the very end is bare: dropped
        return TERMINATOR if self._at_line_start else b"\r\n" + TERMINATOR


def encode_body(message: bytes) -> bytes:
    """The whole wire form of a message held in memory."""
    enc = BodyEncoder()
    return enc.feed(message) + enc.finish()
