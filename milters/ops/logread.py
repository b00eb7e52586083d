"""Reading mailglue's JSON logs back: files, their rotated and gzipped siblings, stdin.

`trace` and `tail` answer questions about yesterday's mail, which logrotate has by then moved
to `milter.json.1` or `milter.json.2.gz`. Naming the live file is enough: its rotated siblings
are read too, oldest first, so events come out in time order.

Lines that are not JSON objects (a truncated last line, a stray print) are skipped, not fatal:
a damaged log must still answer for the rest.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from milters.common.configkit import ConfigError, load_yaml
from milters.ops.maillog import QueueRecord, collect

DEFAULT_CONFIGS = ("/etc/mailglue/milter.yaml", "/etc/mailglue/policy.yaml")
# Postfix's log: its own maillog_file (supervisor mode), else syslog's (systemd mode)
DEFAULT_MAILLOGS = ("/var/log/postfix.log", "/var/log/mail.log")
_ROTATED = re.compile(r"^\.(\d+)(\.gz)?$")
_ROTATED_TAIL = re.compile(r"\.\d+(\.gz)?$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def rotated_family(path: Path) -> list[Path]:
    """`milter.json` -> [milter.json.3.gz, milter.json.2.gz, milter.json.1, milter.json]."""
    siblings: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            if candidate.name.startswith(path.name):
                match = _ROTATED.match(candidate.name[len(path.name) :])
                if match:
                    siblings.append((int(match.group(1)), candidate))
    ordered = [p for _, p in sorted(siblings, key=lambda item: -item[0])]
    return [*ordered, path] if path.exists() else ordered


def open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_lines(sources: Iterable[str]) -> Iterator[str]:
    """Lines of every source, oldest first; `-` is stdin, a live log brings its rotated siblings.

    Naming a rotated file (`.1`, `.gz`) reads just that file. Any log format: the JSON
    events and Postfix's own log are both read through here. A file that cannot be opened
    raises OSError, so the caller can say which.
    """
    for source in sources:
        if source == "-":
            yield from sys.stdin
            continue
        path = Path(source)
        family = [path] if _ROTATED_TAIL.search(path.name) or path.suffix == ".gz" else None
        for member in family or rotated_family(path):
            with open_text(member) as stream:
                yield from stream


def read_events(sources: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Events of every source; `-` is stdin, a live log file brings its rotated siblings."""
    return parse_events(read_lines(sources))


def read_maillog(
    paths: Sequence[str], wanted: Callable[[QueueRecord], bool]
) -> tuple[list[QueueRecord] | None, list[str]]:
    """The wanted records of Postfix's log (None if no file could be read) and the problems.

    No path named: the first of DEFAULT_MAILLOGS that exists. Each problem names its file, so
    an admin knows which log was missing or unreadable.
    """
    sources = list(paths) or [p for p in DEFAULT_MAILLOGS if Path(p).exists()][:1]
    problems = [] if sources else [f"{p}: not found" for p in DEFAULT_MAILLOGS]
    records: list[QueueRecord] | None = None
    for source in sources:
        if source != "-" and not rotated_family(Path(source)):
            problems.append(f"{source}: not found")
            continue
        try:
            found = collect(read_lines([source]), wanted)
        except OSError as exc:
            problems.append(f"{source}: {exc.strerror or exc}")
            continue
        records = (records or []) + found
    return records, problems


def configured_logs(configs: Iterable[str] = DEFAULT_CONFIGS) -> list[str]:
    """The `log.file` of each daemon config that exists and names one."""
    files = []
    for config in configs:
        if not Path(config).exists():
            continue
        try:
            _, data = load_yaml(config)
        except ConfigError:
            continue
        log = data.get("log") if isinstance(data, dict) else None
        if isinstance(log, dict) and isinstance(log.get("file"), str):
            files.append(log["file"])
    return files


def parse_time(text: str, now: datetime) -> datetime:
    """`2026-11-26`, `2026-11-26T09:00`, `…Z`/`+01:00`, or relative `30m`, `2h`, `1d` ago.

    Times without a zone are UTC, as every mailglue log timestamp is.
    """
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (use ISO 8601 or 30m, 2h, 1d)") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def event_time(event: dict[str, Any]) -> datetime | None:
    ts = event.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def in_window(event: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    if since is None and until is None:
        return True
    when = event_time(event)
    if when is None:
        return False
    return (since is None or when >= since) and (until is None or when <= until)


def log_sources(files: Sequence[str]) -> list[str]:
    """The files given, or the milter's and policy service's configured logs."""
    sources = list(files) or configured_logs()
    if not sources:
        raise ConfigError(
            ["no log files given, and none named in /etc/mailglue/{milter,policy}.yaml"]
        )
    return sources
