"""One JSON object per line, so `jq` can answer "what happened to the mail from X, and why".

Written to stdout or to a file. The file is reopened when logrotate has moved it away
(its inode changed), so no copytruncate and no signal is needed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from lmtp_bridge.timing import milliseconds


def json_default(value: object) -> object:
    """`json.dumps(default=…)` for every mailglue JSON output (log lines, `replay --json`)."""
    if isinstance(value, Decimal):
        # Scores have at most three decimals; float's shortest repr prints them exactly
        # (4.999 stays 4.999), and a JSON number lets jq compare (`.score >= 5`).
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def elapsed_ms(since: float) -> float:
    """Milliseconds since a `time.monotonic()` value, to 0.1 ms (sub-ms steps show up)."""
    return milliseconds(since)


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    """Thread-safe writer of JSON log events (one line each)."""

    def __init__(self, path: str | None = None, stream: TextIO | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stream: TextIO = stream if stream is not None else sys.stdout
        self._inode: int | None = None
        if path is not None:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        self._stream = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._inode = os.fstat(self._stream.fileno()).st_ino

    def _reopen_if_rotated(self) -> None:
        if self.path is None:
            return
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != self._inode:
            self._stream.close()
            self._open()

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"ts": utc_timestamp(), "event": event}
        record.update(fields)
        line = json.dumps(record, default=json_default, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._reopen_if_rotated()
            self._stream.write(line + "\n")
            self._stream.flush()
        return record

    def close(self) -> None:
        if self.path is not None:
            with self._lock:
                self._stream.close()
