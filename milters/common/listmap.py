"""The mailing-list addresses Mailman hands to Postfix, read from Mailman's own map.

Mailman 3 writes `postfix_lmtp` (one `address  lmtp:[host]:port` line per list address:
the post address and its -request, -owner, -bounces, -join, ... siblings) whenever a list
is created or removed. Postfix routes with that file; the milter (deliver a post to Mailman
now) and the policy service (a list is a known recipient) read the same file, so a list made
in Postorius is known everywhere at once, with no second copy to keep in step.

`parse_transport_map` is the pure part; `ListMap` rereads the file when it changes and keeps
the last good reading when it becomes unreadable, so a broken file never stops other mail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lmtp_bridge import BackendAddress, BackendAddressError, parse_backend_address

__all__ = ["ListMap", "MapProblem", "parse_transport_map", "transport_backend"]


@dataclass(frozen=True)
class MapProblem:
    """A line that is no `address  lmtp:…` entry; reported, and the line is left out."""

    line: int
    text: str
    why: str


def transport_backend(nexthop: str) -> BackendAddress:
    """Postfix's `lmtp:[127.0.0.1]:8024` (or `lmtp:unix:/path`, `lmtp:inet:h:p`) as a backend.

    The brackets are Postfix's "no MX lookup" mark; for an LMTP socket they change nothing.
    Raises BackendAddressError for anything else.
    """
    text = nexthop.strip()
    if not text.startswith("lmtp:"):
        raise BackendAddressError(f"{text!r} is not an lmtp: transport")
    rest = text[len("lmtp:") :]
    if rest.startswith("["):
        return parse_backend_address(f"inet:{rest}")
    return parse_backend_address(text)


def parse_transport_map(text: str) -> tuple[dict[str, BackendAddress], list[MapProblem]]:
    """Address (lower case) → backend, from a Postfix transport map's source text."""
    entries: dict[str, BackendAddress] = {}
    problems: list[MapProblem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2 or "@" not in fields[0]:
            problems.append(MapProblem(number, line, "expected 'address  lmtp:[host]:port'"))
            continue
        try:
            entries[fields[0].lower()] = transport_backend(fields[1])
        except BackendAddressError as exc:
            problems.append(MapProblem(number, line, str(exc)))
    return entries, problems


class ListMap:
    """The current list addresses from one map file; safe to share between threads."""

    def __init__(self, path: str, report: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._report = report or (lambda _message: None)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) last read
        self._entries: Mapping[str, BackendAddress] = {}
        self._trouble: str | None = None  # the last problem reported, so it is said once

    def backend(self, address: str) -> BackendAddress | None:
        """Mailman's LMTP backend when `address` (extension removed) is a list address."""
        return self.current().get(address.lower())

    def current(self) -> Mapping[str, BackendAddress]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return self._keep(f"cannot read {self.path}: {exc.strerror or exc}")
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp == self._seen:
                return self._entries
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            return self._keep(f"cannot read {self.path}: {exc.strerror or exc}")
        entries, problems = parse_transport_map(text)
        for problem in problems:
            self._report(f"{self.path} line {problem.line}: {problem.why}: {problem.text!r}")
        with self._lock:
            self._seen, self._entries, self._trouble = stamp, entries, None
        return entries

    def _keep(self, message: str) -> Mapping[str, BackendAddress]:
        """The last good reading; the problem is reported once, not on every lookup."""
        with self._lock:
            entries, new = self._entries, message != self._trouble
            self._seen, self._trouble = None, message
        if new:
            self._report(f"{message}; keeping the {len(entries)} list addresses read before")
        return entries
