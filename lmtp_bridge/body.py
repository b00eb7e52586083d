"""The message as it goes on the wire after DATA: CRLF line ends, dot-stuffed, dot-terminated.

Sans-IO and incremental, so a 50 MB message can be streamed in chunks; the state carried between
chunks (whether we are at the start of a line) is what makes dot-stuffing correct across chunk
boundaries.

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
        self._finished = False

    def feed(self, chunk: bytes) -> bytes:
        """Encode one chunk.

        Dropping every CR first turns CRLF into LF and removes bare CRs in one pass; a CR
        split from its LF by a chunk boundary needs no state that way. Only one-byte patterns
        are replaced in bulk, which CPython does several times faster than two-byte ones.
        """
        if self._finished:
            raise RuntimeError("BodyEncoder.feed() after finish()")
        data = chunk.replace(b"\r", b"")
        if not data:
            return b""
        if self._at_line_start and data.startswith(b"."):
            data = b"." + data
        if b"\n." in data:
            data = data.replace(b"\n.", b"\n..")
        self._at_line_start = data.endswith(b"\n")
        return data.replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        """End the body: a last CRLF if the message lacked one, then the lone dot."""
        if self._finished:
            raise RuntimeError("BodyEncoder.finish() called twice")
        self._finished = True
        return TERMINATOR if self._at_line_start else b"\r\n" + TERMINATOR


def encode_body(message: bytes) -> bytes:
    """The whole wire form of a message held in memory."""
    enc = BodyEncoder()
    return enc.feed(message) + enc.finish()
