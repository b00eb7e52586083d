"""Load drivers: concurrent SMTP sessions with per-message latency, and the no-MTA limit.

Why Python clients and not smtp-source: the report needs latency from DATA to the final reply
for every message (p50/p99) and the count of tempfails; smtp-source prints neither. The client
cost is small next to what it measures (one SMTP session per message, the message pre-built
and pre-dot-stuffed, so the client does no per-byte work beyond the socket write).
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import RECIPIENT, SENDER, Template


@dataclass
class Result:
    """Per-message outcomes of one run."""

    latencies_ms: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    replied: float = 0.0  # when the last client got its last reply

    @property
    def accepted(self) -> int:
        return sum(1 for c in self.codes if c // 100 == 2)

    @property
    def tempfails(self) -> int:
        return sum(1 for c in self.codes if c // 100 == 4)

    @property
    def rejected(self) -> int:
        return sum(1 for c in self.codes if c // 100 == 5)


def smtp_one(
    address: tuple[str, int],
    wire: bytes,
    timeout: float,
    recipient: str = RECIPIENT,
    sender: str = SENDER,
) -> tuple[int, float]:
    """One SMTP session, one message; returns (final code, ms from DATA to final reply)."""
    with smtplib.SMTP(*address, timeout=timeout) as smtp:
        smtp.ehlo("client.relay.test")
        code, _ = smtp.mail(sender)
        if code // 100 != 2:
            return code, 0.0
        code, _ = smtp.rcpt(recipient)
        if code // 100 != 2:
            return code, 0.0
        t0 = time.perf_counter()
        smtp.putcmd("data")
        code, _ = smtp.getreply()
        if code != 354:
            return code, (time.perf_counter() - t0) * 1000
        smtp.send(wire)
        code, _ = smtp.getreply()
        return code, (time.perf_counter() - t0) * 1000


def run_parallel(count: int, concurrency: int, one: Callable[[int], tuple[int, float]]) -> Result:
    """Call `one(i)` for i in range(count) from `concurrency` threads; collect outcomes."""
    result = Result()
    lock = threading.Lock()
    indexes = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                i = next(indexes, None)
            if i is None:
                return
            try:
                code, ms = one(i)
            except (OSError, smtplib.SMTPException) as exc:
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    result.codes.append(-1)
                continue
            with lock:
                result.codes.append(code)
                if code // 100 == 2:
                    result.latencies_ms.append(ms)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    result.started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.replied = time.monotonic()
    return result


def smtp_load(
    address: tuple[str, int],
    tpl: Template,
    tag: str,
    count: int,
    concurrency: int,
    recipient: str = RECIPIENT,
) -> Result:
    wires = [tpl.wire(f"<{tag}.{i}@bench.relay.test>") for i in range(count)]
    return run_parallel(count, concurrency, lambda i: smtp_one(address, wires[i], 300, recipient))


# --- the limit: spamd + clamd driven directly ------------------------------------------------


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def clamd_instream(path: Path, data: bytes, timeout: float = 120) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"zINSTREAM\0")
        view = memoryview(data)
        for off in range(0, len(data), 1 << 20):
            part = view[off : off + (1 << 20)]
            s.sendall(len(part).to_bytes(4, "big") + part)
        s.sendall(b"\0\0\0\0")
        return _recv_all(s)


def spamd_headers(address: tuple[str, int], data: bytes, timeout: float = 120) -> bytes:
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(b"HEADERS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(data) + data)
        s.shutdown(socket.SHUT_WR)
        return _recv_all(s)


def limit_load(
    spamd: tuple[str, int],
    clamd_socket: Path,
    tpl: Template,
    tag: str,
    count: int,
    concurrency: int,
    spam_max_size: int,
) -> Result:
    """What any filter calling both scanners must at least spend: no MTA, no delivery.

    Messages above `spam_max_size` skip spamd, as the milter (spam.max_size) and spamc (its
    default 500 KB limit, used by spamass-milter) do.
    """
    messages = [tpl.render(f"<{tag}.{i}@bench.relay.test>") for i in range(count)]

    def one(i: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        data = messages[i]
        reply = clamd_instream(clamd_socket, data)
        if b"OK" not in reply:
            raise OSError(f"clamd: {reply[:80]!r}")
        if len(data) <= spam_max_size:
            answer = spamd_headers(spamd, data)
            if not answer.startswith(b"SPAMD/1.") or b" 0 EX_OK" not in answer[:40]:
                raise OSError(f"spamd: {answer[:80]!r}")
        return 250, (time.perf_counter() - t0) * 1000

    return run_parallel(count, concurrency, one)
