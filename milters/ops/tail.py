"""`mailglue tail`: the milter's log live, one line per transaction, for a human at a terminal.

Subjects are never shown (the log does not carry them, on purpose); the line says when, what
was done, the score, and who wrote to whom. Colour only when writing to a terminal, so
`mailglue tail | grep` stays plain.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from milters.ops.logread import log_sources, parse_events
from milters.scan.event import SpamResult, TransactionEvent

COLORS = {
    "reject": "\033[31m",  # red
    "tempfail": "\033[33m",  # yellow
    "delivered": "\033[32m",  # green
    "accept": "\033[32m",
}
SHADOW_COLOR = "\033[35m"  # magenta: accepted, but would have been refused
RESET = "\033[0m"


def tail_line(event: dict[str, Any], color: bool = False) -> str:
    """`09:00:00 reject    1000.0  bob@example.net → alice@example.org`."""
    tx = TransactionEvent.from_json(event)
    action = str(event.get("action", "?"))
    score = tx.spam.score if isinstance(tx.spam, SpamResult) else None
    score_text = f"{float(score):.1f}" if isinstance(score, int | float) else "-"
    rcpts = ", ".join(r.address for r in tx.recipients) or "-"
    ts = tx.ts or ""
    text = f"{ts[11:19]} {action:<9} {score_text:>7}  {tx.sender or '<>'} → {rcpts}"
    if tx.would is not None:
        text += f"  (shadow: would {tx.would.action})"
    if not color:
        return text
    start = SHADOW_COLOR if tx.would is not None else COLORS.get(action, "")
    return f"{start}{text}{RESET}" if start else text


def wanted(event: dict[str, Any], action: str | None) -> bool:
    if event.get("event") != "transaction":
        return False
    return action is None or action in (event.get("action"), event.get("would_action"))


def follow(
    path: Path, interval: float = 0.5, keep_going: Callable[[], bool] = lambda: True
) -> Iterator[dict[str, Any]]:
    """Events appended to `path` from now on; reopens it when logrotate moves it away."""
    stream = None
    inode = None
    pending = ""
    try:
        while keep_going():
            if stream is None:
                try:
                    stream = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                except FileNotFoundError:
                    time.sleep(interval)
                    continue
                if inode is None:
                    stream.seek(0, os.SEEK_END)  # first open: only what comes next
                inode = os.fstat(stream.fileno()).st_ino
            line = stream.readline()
            if line:
                pending += line  # a partial line waits for its end
                if pending.endswith("\n"):
                    yield from parse_events([pending])
                    pending = ""
                continue
            try:
                rotated = os.stat(path).st_ino != inode
            except FileNotFoundError:
                rotated = True
            if rotated:
                stream.close()
                stream = None  # the new file is read from its start
            else:
                time.sleep(interval)
    finally:
        if stream is not None:
            stream.close()


def command(file: str | None, action: str | None) -> int:
    """`mailglue tail`: follow the milter's log (or stdin, `-`), one line per transaction."""
    color = sys.stdout.isatty()
    events = parse_events(sys.stdin) if file == "-" else follow(Path(file or log_sources([])[0]))
    for event in events:
        if wanted(event, action):
            print(tail_line(event, color), flush=True)
    return 0
