"""A small SPAMC/1.5 client for spamd: a pure request/response layer and a socket shell.

The `Spam:` line of spamd's reply truncates the score to one decimal (4.998 -> "4.9"),
which would put a 4.998 message on the wrong side of nothing but also misreport it. So we
send `HEADERS` and read the per-test scores from a header that spamd's local.cf adds:

    add_header all Mailglue-Tests _TESTSSCORES(,)_

The score is then the sum of those tests, rounded to three decimals as SpamAssassin does.
Without that line we fall back to the `Spam:` line and say so (`precise=False`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from milters.common.sockets import (
    PIECE,
    Address,
    ConnectionDropped,
    exchange_any,
    rewinder,
)

PROTOCOL = b"SPAMC/1.5"
TESTS_HEADER = b"x-spam-mailglue-tests"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class SpamdError(Exception):
    """spamd answered, but not with a usable result (or not within the protocol)."""


@dataclass(frozen=True)
class SpamdResult:
    score: Decimal
    threshold: Decimal
    tests: tuple[tuple[str, Decimal], ...]  # sorted by name, as spamd lists them
    precise: bool  # False when the score came from the one-decimal Spam: line
    backend: str


def build_request(command: str, length: int, user: str | None = None) -> bytes:
    lines = [f"{command} ".encode() + PROTOCOL, f"Content-length: {length}".encode()]
    if user:
        lines.append(f"User: {user}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass(frozen=True)
class SpamdResponse:
    code: int
    message: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


_STATUS = re.compile(rb"^SPAMD/\d+\.\d+ +(\d+) +(.*)$")
_SPAM_LINE = re.compile(r"^\s*(True|False|Yes|No)\s*;\s*(-?[0-9.]+)\s*/\s*(-?[0-9.]+)\s*$", re.I)


def parse_response(data: bytes) -> SpamdResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        # An error reply may be just the status line.
        head, body = data.rstrip(b"\r\n"), b""
    lines = head.split(b"\r\n")
    match = _STATUS.match(lines[0])
    if not match:
        raise SpamdError(f"not a SPAMD reply: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise SpamdError(f"malformed reply header: {line[:80]!r}")
        headers[name.strip().decode("ascii", "replace").lower()] = value.strip().decode(
            "ascii", "replace"
        )
    return SpamdResponse(
        int(match.group(1)), match.group(2).decode("ascii", "replace"), headers, body
    )


def unfolded_header(block: bytes, name: bytes) -> bytes | None:
    """The value of the first header `name` in a header block, continuation lines joined."""
    value: bytes | None = None
    for line in block.replace(b"\r\n", b"\n").split(b"\n"):
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value += b" " + line.strip()
                continue
            break
        field, colon, rest = line.partition(b":")
        if colon and field.strip().lower() == name:
            value = rest.strip()
    return value


def parse_tests(value: str) -> tuple[tuple[str, Decimal], ...]:
    """`A=1.0,B=-0.001` -> (("A", 1.0), ("B", -0.001)); "none" -> ()."""
    value = re.sub(r"\s+", "", value)
    if value in ("", "none"):
        return ()
    tests = []
    for item in value.split(","):
        name, eq, score = item.partition("=")
        if not eq or not name:
            raise SpamdError(f"bad test entry {item!r}")
        try:
            tests.append((name, Decimal(score)))
        except InvalidOperation as exc:
            raise SpamdError(f"bad test score in {item!r}") from exc
    return tuple(tests)


def result_from_response(response: SpamdResponse, backend: str) -> SpamdResult:
    if response.code != 0:
        raise SpamdError(f"spamd error {response.code}: {response.message}")
    spam_line = response.headers.get("spam")
    match = _SPAM_LINE.match(spam_line or "")
    if not match:
        raise SpamdError(f"reply without a usable Spam: line ({spam_line!r})")
    threshold = Decimal(match.group(3))
    raw_tests = unfolded_header(response.body, TESTS_HEADER)
    if raw_tests is None:
        return SpamdResult(Decimal(match.group(2)), threshold, (), False, backend)
    tests = parse_tests(raw_tests.decode("ascii", "replace"))
    score = sum((s for _, s in tests), Decimal(0)).quantize(Decimal("0.001"))
    return SpamdResult(score, threshold, tests, True, backend)


def _read_all(sock: socket.socket) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = sock.recv(PIECE)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            raise SpamdError("spamd reply larger than expected")
        parts.append(chunk)


def check(
    backends: Sequence[Address],
    message: BinaryIO | bytes,
    length: int,
    timeout: float,
    user: str | None = None,
    prefix: Iterable[bytes] = (),
) -> SpamdResult:
    """Score one message. `prefix` is sent before the message (our Received header).

    Raises BackendUnavailable, TimeoutError/OSError or SpamdError; the caller maps those
    to the configured failure policy.
    """
    prefix_bytes = b"".join(prefix)

    def talk(sock: socket.socket) -> bytes:
        sock.sendall(build_request("HEADERS", length + len(prefix_bytes), user) + prefix_bytes)
        if isinstance(message, bytes):
            sock.sendall(message)
        else:
            while chunk := message.read(PIECE):
                sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        data = _read_all(sock)
        if not data:
            raise ConnectionDropped("spamd closed the connection without a reply")
        return data

    data, address = exchange_any(backends, timeout, talk, rewinder(message))
    return result_from_response(parse_response(data), str(address))
