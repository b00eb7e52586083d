"""The I/O shell around `protocol`: sockets, timeouts, connection reuse, streaming.

Failure policy: anything that stops the client from getting the replies it needs (connect
refused, connection lost, a reply that does not parse, a timeout) raises `BackendUnavailable`
(`BackendTimeout` for timeouts) and closes the connection. Replies are only returned when the
server actually gave them, so a 4xx in a `DeliveryResult` always comes from the server. The
exception carries the replies that were already definitive; `exc.outcomes(recipients)` turns
it into per-recipient outcomes for the fold rule, marking the rest "not attempted".

If the connection dies after the dot, some recipients may have been delivered without us
hearing so: those count as not attempted (temporary), and the retry is safe because Cyrus drops
duplicate deliveries (same Message-ID and Date).

Reuse: a connection whose last transaction ended with its final replies is back in the
initial state (RFC 5321 4.1.1.4), so if it was used less than `trust_idle` seconds ago and the
server has neither closed it nor said anything since, the next MAIL goes out at once. Any other
held connection is checked with RSET first, as a connection that idled for long may have been
dropped on the way without either end noticing.

One `LmtpClient` holds at most one connection and is not thread-safe: use one per worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

from lmtp_bridge.address import BackendAddress, connect, parse_backend_address
from lmtp_bridge.body import BodyEncoder, has_8bit
from lmtp_bridge.outcome import NotAttempted, NotAttemptedReason, Outcome
from lmtp_bridge.protocol import (
    NOOP,
    QUIT,
    RSET,
    Capabilities,
    Envelope,
    Phase,
    RecipientReply,
    Transaction,
    lhlo_command,
    quote_address,
    rcpt_command,
    replies_only,
    unique,
)
from lmtp_bridge.replies import MalformedReply, Reply, ReplyParser
from lmtp_bridge.timing import milliseconds

__all__ = [
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "DeliveryResult",
    "LmtpClient",
    "Timeouts",
    "Timings",
]

# 32 KB pieces: each session then holds fewer bytes in flight. 100 KB mail at 50 sessions:
# peak 57 MB with 64 KB to 1 MB pieces, 52 MB with 32 KB (README, memory notes of 2026-12-07).
CHUNK_SIZE = 32 * 1024
_RECV_SIZE = 64 * 1024


class BackendUnavailable(Exception):
    """The backend could not be used; nothing more is known than what `partial` says."""

    reason = NotAttemptedReason.UNREACHABLE

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        partial: Mapping[str, RecipientReply] | None = None,
        after_data: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.partial: dict[str, RecipientReply] = dict(partial or {})
        self.after_data = after_data

    def at(
        self,
        backend: str,
        partial: Mapping[str, RecipientReply] | None = None,
        after_data: bool = False,
    ) -> BackendUnavailable:
        """The same failure (same class), now naming the backend and what it had answered."""
        return type(self)(self.message, backend=backend, partial=partial, after_data=after_data)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.backend}: {text}" if self.backend else text

    def outcomes(self, recipients: Iterable[str]) -> dict[str, Outcome]:
        """Per recipient: its definitive reply if one came, else "not attempted: <reason>"."""
        detail = str(self)
        if self.after_data:
            detail += "; after the message was sent, so it may have been delivered"
        missing = NotAttempted(self.reason, detail, maybe_delivered=self.after_data)
        return {
            r: self.partial[r].reply if r in self.partial else missing
            for r in unique(list(recipients))
        }


class BackendTimeout(BackendUnavailable):
    """The backend did not answer within the stage's timeout (or the transaction's deadline)."""

    reason = NotAttemptedReason.TIMEOUT


class BackendProtocolError(BackendUnavailable):
    """The backend answered with something that is not LMTP, or refused the session itself."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed per stage; each is also capped by a transaction deadline if given."""

    connect: float = 10.0  # TCP/unix connect
    command: float = 30.0  # greeting, LHLO, MAIL, RCPT, DATA, RSET replies
    data: float = 60.0  # each chunk of the body to be written
    final: float = 120.0  # each per-recipient reply after the dot (Sieve, fsync)


@dataclass(frozen=True, slots=True)
class Timings:
    """Milliseconds spent per stage of one delivery."""

    connect_ms: float
    envelope_ms: float
    data_ms: float
    final_ms: float
    total_ms: float
    reused_connection: bool


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Every recipient's definitive reply (and its stage), plus where and how long."""

    backend: str
    outcomes: Mapping[str, RecipientReply]
    timings: Timings
    # Why the connection held from an earlier transaction was given up first (dead, or RSET
    # refused), for the caller's log; None when there was nothing to give up.
    replaced: str | None = None

    @property
    def replies(self) -> dict[str, Reply]:
        """Recipient → reply, without the stage."""
        return replies_only(self.outcomes)


class _Reuse(Enum):
    NEW = "new connection"
    CHECKED = "reused after RSET"
    TRUSTED = "reused without a check"


class _StaleConnection(Exception):
    """A trusted connection failed before any reply: retry once on a new one."""


class _Connection:
    """A socket plus its reply parser; turns every socket failure into BackendUnavailable."""

    def __init__(self, sock: socket.socket, label: str) -> None:
        self.sock = sock
        self.label = label
        self.parser = ReplyParser()
        self.replies: list[Reply] = []
        self.caps = Capabilities()
        self.transactions = 0
        self.last_used = time.monotonic()
        self.clean = False  # True when the last transaction ended with its final replies

    def quiet_and_open(self) -> bool:
        """Nothing to read and no EOF: the server has not closed or spoken since its last reply.

        A peek that does not wait; a 421 or an EOF waiting in the buffer means not reusable.
        """
        if self.replies or self.parser.has_partial:
            return False
        try:
            self.sock.settimeout(0)
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def send(self, data: bytes, timeout: float, what: str) -> None:
        if not data:
            return
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except TimeoutError:
            raise BackendTimeout(f"no progress for {timeout:g}s while sending {what}") from None
        except OSError as exc:
            raise BackendUnavailable(f"connection lost while sending {what}: {exc}") from exc

    def read_reply(self, timeout: float, what: str) -> Reply:
        end = time.monotonic() + timeout
        while not self.replies:
            left = end - time.monotonic()
            if left <= 0:
                raise BackendTimeout(f"no reply within {timeout:g}s to {what}")
            try:
                self.sock.settimeout(left)
                data = self.sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise BackendTimeout(f"no reply within {timeout:g}s to {what}") from None
            except OSError as exc:
                raise BackendUnavailable(f"connection lost waiting for {what}: {exc}") from exc
            try:
                if not data:
                    self.parser.close()
                    raise BackendUnavailable(f"server closed the connection before {what}")
                self.replies.extend(self.parser.feed(data))
            except MalformedReply as exc:
                raise BackendProtocolError(f"garbled reply to {what}: {exc}") from exc
        return self.replies.pop(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class LmtpClient:
    """Delivers messages to one LMTP backend and reuses the connection between messages."""

    def __init__(
        self,
        address: BackendAddress | str,
        *,
        lhlo_name: str | None = None,
        timeouts: Timeouts | None = None,
        max_idle: float = 60.0,
        max_transactions: int = 1000,
        chunk_size: int = CHUNK_SIZE,
        trust_idle: float = 2.0,
    ) -> None:
        self.address = parse_backend_address(address) if isinstance(address, str) else address
        self.lhlo_name = lhlo_name or socket.getfqdn() or "localhost"
        lhlo_command(self.lhlo_name)  # fail at construction, not at the first message
        self.timeouts = timeouts or Timeouts()
        self.max_idle = max_idle
        self.max_transactions = max_transactions
        self.chunk_size = chunk_size
        self.trust_idle = trust_idle
        self._conn: _Connection | None = None
        self._replaced: str | None = None  # see DeliveryResult.replaced

    def __enter__(self) -> LmtpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True while a connection is held open for reuse."""
        return self._conn is not None

    def close(self) -> None:
        """Say QUIT (briefly, best effort) and drop the connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(BackendUnavailable):
            conn.send(QUIT, 1.0, "QUIT")
            conn.read_reply(1.0, "QUIT")
        conn.close()

    def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        message: bytes | BinaryIO,
        size: int | None = None,
        *,
        eight_bit: bool | None = None,
        deadline: float | None = None,
    ) -> DeliveryResult:
        """Deliver one message; return each recipient's definitive reply.

        `message` is bytes or a binary file read from its current position in chunks (a
        seekable file is scanned once first for 8-bit bytes unless `eight_bit` is given; an
        unseekable one is declared 8-bit when the server offers 8BITMIME). `deadline` is a
        `time.monotonic()` value that caps every stage's timeout. Raises `MailAddressError` before
        any I/O for an address that cannot be sent, `BackendUnavailable`/`BackendTimeout` as
        described in the module docstring.
        """
        envelope = Envelope(
            sender,
            unique(recipients),
            size if size is not None else _size_of(message),
            eight_bit if eight_bit is not None else _is_8bit(message),
        )
        t0 = time.monotonic()
        conn, reused = self._ready(deadline, trust_quiet=True)
        try:
            return self._transaction(conn, reused, envelope, message, deadline, t0)
        except _StaleConnection:  # closed by the server just as we reused it: nothing was sent
            conn, reused = self._ready(deadline)
            self._replaced = "the held connection was closed by the server; reconnected"
            return self._transaction(conn, reused, envelope, message, deadline, t0)

    def _transaction(
        self,
        conn: _Connection,
        reused: _Reuse,
        envelope: Envelope,
        message: bytes | BinaryIO,
        deadline: float | None,
        t0: float,
    ) -> DeliveryResult:
        t1 = time.monotonic()
        tx = Transaction(envelope, conn.caps)
        t2 = t3 = t1
        conn.clean = False
        heard = False
        try:
            conn.send(tx.start(), self._limit(self.timeouts.command, deadline), "MAIL/RCPT")
            while tx.phase is Phase.ENVELOPE:
                reply = conn.read_reply(self._limit(self.timeouts.command, deadline), "MAIL/RCPT")
                heard = True
                conn.send(tx.feed(reply), self._limit(self.timeouts.command, deadline), "RCPT")
            t2 = time.monotonic()
            if tx.phase is Phase.BODY:
                self._send_body(conn, message, deadline)
                tx.body_sent()
            t3 = time.monotonic()
            while tx.phase is Phase.FINAL:
                timeout = self._limit(self.timeouts.final, deadline)
                tx.feed(conn.read_reply(timeout, "the message (per-recipient replies)"))
        except BackendUnavailable as exc:
            self._drop()
            if reused is _Reuse.TRUSTED and not heard and not isinstance(exc, BackendTimeout):
                raise _StaleConnection from exc
            raise exc.at(str(self.address), tx.decided, tx.phase is Phase.FINAL) from exc
        except BaseException:
            self._drop()  # e.g. the message file failed mid-DATA: the server must not deliver
            raise
        t4 = time.monotonic()
        conn.transactions += 1
        conn.last_used = t4
        conn.clean = tx.phase is Phase.DONE and not tx.needs_reset
        if tx.must_close:
            self._drop()
        timings = Timings(
            milliseconds(t0, t1),
            milliseconds(t1, t2),
            milliseconds(t2, t3),
            milliseconds(t3, t4),
            milliseconds(t0, t4),
            reused is not _Reuse.NEW,
        )
        return DeliveryResult(str(self.address), tx.result, timings, self._replaced)

    def probe(self, recipient: str, *, deadline: float | None = None) -> Reply:
        """RCPT-check one mailbox (MAIL FROM:<>, RCPT TO, RSET); return the RCPT reply.

        A refused MAIL FROM:<> says nothing about the mailbox, so it raises
        `BackendUnavailable` (the policy service should defer, not reject).
        """
        rcpt = rcpt_command(recipient)
        mail = f"MAIL FROM:{quote_address('', allow_empty=True)}\r\n".encode()
        conn, _ = self._ready(deadline)
        try:
            timeout = self._limit(self.timeouts.command, deadline)
            if conn.caps.pipelining:
                conn.send(mail + rcpt + RSET, timeout, "probe")
                mail_reply = conn.read_reply(timeout, "MAIL FROM:<>")
                rcpt_reply = conn.read_reply(timeout, "RCPT TO")
            else:
                conn.send(mail, timeout, "MAIL FROM:<>")
                mail_reply = conn.read_reply(timeout, "MAIL FROM:<>")
                if not mail_reply.is_positive:
                    raise BackendProtocolError(f"probe: MAIL FROM:<> refused: {mail_reply}")
                conn.send(rcpt, timeout, "RCPT TO")
                rcpt_reply = conn.read_reply(timeout, "RCPT TO")
                conn.send(RSET, timeout, "RSET")
            if not mail_reply.is_positive:
                raise BackendProtocolError(f"probe: MAIL FROM:<> refused: {mail_reply}")
            rset_reply = conn.read_reply(timeout, "RSET")
        except BackendUnavailable as exc:
            self._drop()
            raise exc.at(str(self.address)) from exc
        except BaseException:
            self._drop()
            raise
        conn.last_used = time.monotonic()
        if not rset_reply.is_positive:
            self._drop()
        return rcpt_reply

    def noop(self, *, deadline: float | None = None) -> Reply:
        """NOOP on the (possibly new) connection: a cheap health check for monitoring."""
        conn, _ = self._ready(deadline)
        timeout = self._limit(self.timeouts.command, deadline)
        try:
            conn.send(NOOP, timeout, "NOOP")
            return conn.read_reply(timeout, "NOOP")
        except BackendUnavailable as exc:
            self._drop()
            raise exc.at(str(self.address)) from exc

    def _limit(self, timeout: float, deadline: float | None) -> float:
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise BackendTimeout("the transaction's time budget is used up")
        return min(timeout, left)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _ready(
        self, deadline: float | None, *, trust_quiet: bool = False
    ) -> tuple[_Connection, _Reuse]:
        """A connection in a clean state: the held one if still good (see the module
        docstring; `trust_quiet` allows skipping RSET), else a new one."""
        self._replaced = None
        conn = self._conn
        if conn is not None:
            idle = time.monotonic() - conn.last_used
            if idle > self.max_idle or conn.transactions >= self.max_transactions:
                self.close()
            elif trust_quiet and conn.clean and idle <= self.trust_idle and conn.quiet_and_open():
                return conn, _Reuse.TRUSTED
            else:
                try:
                    timeout = self._limit(self.timeouts.command, deadline)
                    conn.send(RSET, timeout, "RSET")
                    reply = conn.read_reply(timeout, "RSET")
                except BackendTimeout:
                    self._drop()
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                except BackendUnavailable as exc:
                    self._replaced = f"the held connection was dead ({exc}); reconnected"
                    self._drop()
                else:
                    if reply.is_positive:
                        return conn, _Reuse.CHECKED
                    self._replaced = f"RSET on the held connection answered {reply}; reconnected"
                    self._drop()
        try:
            self._conn = self._connect(deadline)
        except BackendUnavailable as exc:
            raise exc.at(str(self.address)) from exc
        return self._conn, _Reuse.NEW

    def _connect(self, deadline: float | None) -> _Connection:
        timeout = self._limit(self.timeouts.connect, deadline)
        try:
            sock = connect(self.address, timeout, nodelay=True)
        except TimeoutError:
            raise BackendTimeout(f"connect did not complete within {timeout:g}s") from None
        except OSError as exc:
            raise BackendUnavailable(f"cannot connect: {exc.strerror or exc}") from exc
        conn = _Connection(sock, str(self.address))
        try:
            timeout = self._limit(self.timeouts.command, deadline)
            greeting = conn.read_reply(timeout, "the greeting")
            if greeting.code != 220:
                raise BackendProtocolError(f"server refused the session: {greeting}")
            conn.send(lhlo_command(self.lhlo_name), timeout, "LHLO")
            lhlo = conn.read_reply(timeout, "LHLO")
            if lhlo.code != 250:
                raise BackendProtocolError(f"LHLO refused: {lhlo}")
        except BaseException:
            conn.close()
            raise
        conn.caps = Capabilities.from_lhlo(lhlo)
        return conn

    def _send_body(
        self, conn: _Connection, message: bytes | BinaryIO, deadline: float | None
    ) -> None:
        encoder = BodyEncoder()
        if isinstance(message, bytes | bytearray | memoryview):
            view = memoryview(message)
            for start in range(0, len(view), self.chunk_size):
                chunk = bytes(view[start : start + self.chunk_size])
                conn.send(encoder.feed(chunk), self._limit(self.timeouts.data, deadline), "body")
        else:
            while chunk := message.read(self.chunk_size):
                conn.send(encoder.feed(chunk), self._limit(self.timeouts.data, deadline), "body")
        conn.send(encoder.finish(), self._limit(self.timeouts.data, deadline), "end of data")


def _size_of(message: bytes | BinaryIO) -> int | None:
    """Byte count for SIZE=: len() for bytes, what is left of a seekable/stat-able file."""
    if isinstance(message, bytes | bytearray | memoryview):
        return len(message)
    try:
        if message.seekable():
            pos = message.tell()
            end = message.seek(0, os.SEEK_END)
            message.seek(pos)
            return end - pos
    except (OSError, ValueError):
        pass
    return None


def _is_8bit(message: bytes | BinaryIO) -> bool:
    """Scan for 8-bit bytes; a file that cannot be rewound is assumed 8-bit (harmless)."""
    if isinstance(message, bytes | bytearray | memoryview):
        return has_8bit(bytes(message))
    try:
        if not message.seekable():
            return True
        pos = message.tell()
        try:
            while chunk := message.read(CHUNK_SIZE):
                if has_8bit(chunk):
                    return True
            return False
        finally:
            message.seek(pos)
    except (OSError, ValueError):
        return True
