"""Scan results remembered for a while, so the same message is not paid for twice.

spamd costs ~150 ms of CPU per small message and everything else ~10 ms, and the same
content comes back: a sender retries after our 451 (Cyrus down, a recipient deferred, the
time budget spent), or after a 250 it never saw; a list server re-sends. The key is what the
scores depend on: the client as the Received line shows it (address, name, HELO, TLS,
login), the envelope sender, the headers spamd sees (ours removed) and the body. Not the
recipients, the queue id or the time. Only definite results are kept (both scanners
answered, the score is precise); the verdict is always decided again from them, so new
thresholds apply at once. Entries expire after `ttl` seconds (new signatures and rules
count from then) and the oldest go first beyond `max_entries`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace

from milters.scan.headers import ClientInfo, render
from milters.scan.scanner import ScanReport
from milters.scan.verdict import SpamScore, Unscanned


def scan_key(
    client: ClientInfo, sender: str, headers: Sequence[tuple[str, str]], body_sha256: bytes
) -> str:
    """A digest of everything the scan result depends on."""
    digest = hashlib.sha256()
    for part in (client.addr, client.name, client.helo, client.tls, client.auth_user, sender):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(render(headers) + b"\0")
    digest.update(body_sha256)
    return digest.hexdigest()


def worth_keeping(report: ScanReport) -> bool:
    """Only results a retry would get again: both scanners answered, the score is exact."""
    return (
        not isinstance(report.virus, Unscanned)
        and isinstance(report.spam, SpamScore)
        and report.spam_precise
    )


class ScanMemo:
    """Thread-safe, bounded in time and size; `ttl` 0 keeps nothing."""

    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, ScanReport]] = OrderedDict()

    def get(self, key: str) -> ScanReport | None:
        """A copy of the remembered report, marked `cached`, or None."""
        if self.ttl <= 0:
            return None
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires, report = found
            if now >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return replace(report, timings_ms={}, cached=True)

    def put(self, key: str, report: ScanReport) -> None:
        if self.ttl <= 0 or not worth_keeping(report):
            return
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, report)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
