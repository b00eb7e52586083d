"""Daemon logs for the pytest failure report: what each daemon wrote while the test ran.

A failing integration test is rarely explained by the assertion alone; the reason is usually
in a daemon's log (a milter timeout in the maillog, an lmtpd error in syslog).
"""

from __future__ import annotations

from pathlib import Path


class DaemonLogs:
    """Registry of log files; `mark()` before a test, `sections()` after it failed."""

    def __init__(self, max_lines: int = 40) -> None:
        self.max_lines = max_lines
        self._logs: dict[str, Path] = {}
        self._marks: dict[str, int] = {}

    def register(self, name: str, path: Path) -> None:
        self._logs[name] = path
        self._marks.setdefault(name, 0)  # registered during a test: show from the start

    def mark(self) -> None:
        """Remember how long each log is, so a report shows only this test's lines."""
        self._marks = {name: _size(path) for name, path in self._logs.items()}

    def sections(self) -> list[tuple[str, str]]:
        """(title, text) pairs for pytest's report.sections: the new lines of each log."""
        result = []
        for name, path in self._logs.items():
            try:
                with path.open("rb") as f:
                    f.seek(self._marks.get(name, 0))
                    new = f.read().decode("utf-8", "replace").splitlines()
            except OSError as exc:
                result.append((f"daemon log {name}", f"({path}: {exc})"))
                continue
            if not new:
                continue
            cut = len(new) - self.max_lines
            head = [f"... {cut} earlier lines in {path}"] if cut > 0 else []
            text = "\n".join(head + new[-self.max_lines :])
            result.append((f"daemon log {name} ({path})", text))
        if not result and self._logs:
            paths = "\n".join(f"{name}: {path}" for name, path in self._logs.items())
            result.append(("daemon logs", f"(nothing new during this test)\n{paths}"))
        return result


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
