"""Scan results remembered for a while, so the same message is not paid for twice.

spamd costs ~150 ms of CPU per small message and everything else ~10 ms, and the same
content comes back: a sender retries after our 451 (Cyrus down, clamd down, a recipient
deferred, the time budget spent), or after a 250 it never saw; a list server re-sends. The
key is what the results depend on: the client as the Received line shows it (address, name,
HELO, TLS, login), the envelope sender, the headers the scanners see (ours removed) and the
body. Not the recipients, the queue id or the time. Each scanner's result is kept when it is
definite (clamd answered; spamd gave an exact score), so a retry after clamd failed still
does not pay spamd again. The verdict is always decided again from them, so new thresholds
apply at once. Entries expire after `ttl` seconds (new signatures and rules count from then)
and the oldest go first beyond `max_entries`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from milters.scan.headers import ClientInfo, render_as_received
from milters.scan.scanner import Known, ScanReport
from milters.scan.verdict import SpamScore, Unscanned


def scan_key(
    client: ClientInfo, sender: str, headers: Sequence[tuple[str, str]], body_sha256: bytes
) -> str:
    """A digest of everything the scan results depend on."""
    digest = hashlib.sha256()
    for part in (client.addr, client.name, client.helo, client.tls, client.auth_user, sender):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(render_as_received(headers) + b"\0")
    digest.update(body_sha256)
    return digest.hexdigest()


def definite(report: ScanReport) -> Known:
    """The parts of a report a retry would get again: clamd's answer, spamd's exact score."""
    virus = None if isinstance(report.virus, Unscanned) else report.virus
    spam = report.spam if isinstance(report.spam, SpamScore) and report.spam_precise else None
    return Known(virus, report.clamd_backend, spam, report.spamd_backend)


@dataclass(frozen=True)
class _Entry:
    expires: float
    known: Known


class ScanMemo:
    """Thread-safe, bounded in time and size; `ttl` 0 keeps nothing."""

    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key: str) -> Known | None:
        """What is known of this message still, or None."""
        if self.ttl <= 0:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry.expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.known

    def put(self, key: str, report: ScanReport) -> None:
        """Remember the definite parts of a report; a part known before and not scanned again
        (report.reused) keeps its first expiry, so a message retried forever is rescanned."""
        if self.ttl <= 0:
            return
        known = definite(report)
        if known.virus is None and known.spam is None:
            return
        with self._lock:
            before = self._entries.get(key)
            expires = self._clock() + self.ttl
            if before is not None and report.reused:
                expires = before.expires
            self._entries[key] = _Entry(expires, known)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
