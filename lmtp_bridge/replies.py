"""SMTP/LMTP replies: a value type and a sans-IO parser.

The parser takes bytes in whatever pieces the socket hands over and yields complete replies, so
the I/O shell never has to care where a read happened to stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["MalformedReply", "Reply", "ReplyParser"]

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?= |$)")
_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)(.*)", re.DOTALL)


class MalformedReply(ValueError):
    """The peer sent something that is not an SMTP reply; the connection cannot be trusted."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete reply: code, optional enhanced status code (RFC 3463), text lines."""

    code: int
    enhanced: str | None = None
    lines: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code {self.code} is outside 200-599")
        if self.enhanced is not None:
            m = _ENHANCED.fullmatch(self.enhanced)
            if m is None or int(m.group(1)) != self.code // 100:
                raise ValueError(
                    f"enhanced status {self.enhanced!r} does not fit reply code {self.code}"
                )
        if any("\r" in line or "\n" in line for line in self.lines):
            raise ValueError("reply text must not contain CR or LF")

    @classmethod
    def make(cls, code: int, enhanced: str | None, text: str) -> Reply:
        """A one-line reply, for replies this package composes itself."""
        return cls(code, enhanced, (text,))

    @property
    def text(self) -> str:
        """All text lines joined by a space: one line for logs and for an SMTP reply."""
        return " ".join(line for line in self.lines if line)

    @property
    def is_positive(self) -> bool:
        """2xx (and 3xx, the 354 to DATA): the command went through."""
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        """4xx: worth retrying later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: retrying the same thing will fail the same way."""
        return self.code >= 500

    def __str__(self) -> str:
        return " ".join(part for part in (str(self.code), self.enhanced, self.text) if part)


def _split_enhanced(code: int, text: str) -> tuple[str | None, str]:
    m = _ENHANCED.match(text)
    if m is None or int(m.group(1)) != code // 100:
        return None, text
    return m.group(0), text[m.end() :].lstrip(" ")


class ReplyParser:
    """Incremental reply parser; after a MalformedReply it stays broken (drop the connection)."""

    def __init__(self, max_line_length: int = 2048, max_lines: int = 512) -> None:
        self._max_line = max_line_length
        self._max_lines = max_lines
        self._buf = bytearray()
        self._code: int | None = None
        self._lines: list[str] = []
        self._enhanced: str | None = None
        self._broken: MalformedReply | None = None

    @property
    def has_partial(self) -> bool:
        """True while part of a reply has been received but not its final line."""
        return bool(self._buf) or self._code is not None

    def feed(self, data: bytes) -> list[Reply]:
        """Add received bytes; return the replies they completed, in order."""
        if self._broken is not None:
            raise self._broken
        self._buf += data
        out: list[Reply] = []
        try:
            while True:
                end = self._buf.find(b"\n")
                if end < 0:
                    if len(self._buf) > self._max_line:
                        self._fail(f"reply line longer than {self._max_line} bytes")
                    break
                raw = bytes(self._buf[:end])
                del self._buf[: end + 1]
                reply = self._line(raw[:-1] if raw.endswith(b"\r") else raw)
                if reply is not None:
                    out.append(reply)
        except MalformedReply as exc:
            self._broken = exc
            raise
        return out

    def close(self) -> None:
        """Call at end of stream: complains if it cut a reply in half."""
        if self._broken is None and self.has_partial:
            self._broken = MalformedReply("connection closed in the middle of a reply")
            raise self._broken

    def _fail(self, why: str) -> NoReturn:
        raise MalformedReply(why)

    def _line(self, raw: bytes) -> Reply | None:
        if len(raw) > self._max_line:
            self._fail(f"reply line longer than {self._max_line} bytes")
        if b"\r" in raw:
            self._fail(f"bare CR inside reply line {raw[:80]!r}")
        m = _LINE.fullmatch(raw)
        if m is None:
            self._fail(f"not an SMTP reply line: {raw[:80]!r}")
        code = int(m.group(1))
        if self._code is not None and code != self._code:
            self._fail(f"reply code changed from {self._code} to {code} inside a multiline reply")
        if len(self._lines) >= self._max_lines:
            self._fail(f"multiline reply longer than {self._max_lines} lines")
        enhanced, text = _split_enhanced(code, m.group(3).decode("utf-8", errors="replace"))
        if self._code is None:
            self._code = code
        if self._enhanced is None:
            self._enhanced = enhanced  # Cyrus puts it on the last line only
        self._lines.append(text)
        if m.group(2) == b"-":
            return None
        reply = Reply(code, self._enhanced, tuple(self._lines))
        self._code, self._enhanced, self._lines = None, None, []
        return reply
