"""SPAMC `TELL`: teaching spamd's Bayes database that a message is spam or ham.

spamd answers `DidSet: local` only when Bayes actually learned (the message was new, or was
learned as the other class before). A message learned already gets EX_OK and no DidSet, which
looks the same as "Bayes is off". `teach` tells the two apart so that a run interrupted after
spamd learned but before the message was removed can finish: it forgets the message
(`Remove: local`) and learns it again, which leaves Bayes exactly where it was, but confirmed.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Sequence

from milters.common.sockets import Address, connect_any
from milters.scanners.spamc import PROTOCOL, SpamdError, parse_response


class MessageClass(enum.Enum):
    SPAM = "spam"
    HAM = "ham"


def tell_request(message_class: MessageClass, length: int, remove: bool, user: str | None) -> bytes:
    lines = [
        b"TELL " + PROTOCOL,
        f"Content-length: {length}".encode(),
        f"Message-class: {message_class.value}".encode(),
        b"Remove: local" if remove else b"Set: local",
    ]
    if user:
        lines.append(f"User: {user}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def confirmed(reply: bytes, remove: bool) -> bool:
    """Did spamd say it changed its local database? (`DidSet: local` / `DidRemove: local`)."""
    response = parse_response(reply)
    if response.code != 0:
        raise SpamdError(f"spamd refused TELL: {response.code} {response.message}")
    header = response.headers.get("didremove" if remove else "didset", "")
    return "local" in [part.strip() for part in header.split(",")]


def tell(
    backends: Sequence[Address],
    message: bytes,
    message_class: MessageClass,
    timeout: float,
    remove: bool = False,
    user: str | None = None,
) -> bool:
    sock, _ = connect_any(backends, timeout)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(tell_request(message_class, len(message), remove, user) + message)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return confirmed(b"".join(chunks), remove)


class Taught(enum.Enum):
    LEARNED = "learned"  # spamd learned it now
    ALREADY = "already"  # it had been learned before (an interrupted run); confirmed again


def teach(
    backends: Sequence[Address],
    message: bytes,
    message_class: MessageClass,
    timeout: float,
    user: str | None = None,
) -> Taught:
    """Make spamd's Bayes hold `message` as `message_class`, with spamd's confirmation.

    Raises SpamdError when spamd does not confirm (Bayes off, `bayes_learn_during_report 0`,
    or spamd without `--allow-tell`), and OSError when it cannot be reached.
    """
    if tell(backends, message, message_class, timeout, user=user):
        return Taught.LEARNED
    if tell(backends, message, message_class, timeout, remove=True, user=user) and tell(
        backends, message, message_class, timeout, user=user
    ):
        return Taught.ALREADY
    raise SpamdError("spamd did not confirm learning (is Bayes on, with --allow-tell?)")
