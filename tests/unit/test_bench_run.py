"""`python -m bench` ends with a clear answer when it cannot measure or cannot draw.

Both used to end in a traceback: a ZeroDivisionError when no configuration started, and a
ModuleNotFoundError after the results were written when matplotlib (the bench extra) was
not installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report, run


class StackThatStartsNothing:
    def __init__(self, root: Path) -> None:
        self.targets: dict[str, Any] = {}

    def start_backends(self) -> None:
        pass

    def add(self, name: str) -> None:
        raise RuntimeError(f"{name} would not start\nits log tail")

    def stop(self) -> None:
        pass


def test_no_configuration_started_is_a_clear_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "Stack", StackThatStartsNothing)
    code = run.main(["--configs", "mailglue,baseline", "--sizes", "5KB", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "SKIPPED mailglue: could not start it: mailglue would not start" in printed
    assert "nothing to measure: no configuration started" in printed
    assert list(tmp_path.iterdir()) == []  # no empty report that looks like a result


def test_results_are_written_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    report.write(tmp_path, [], "a plan", started=0.0)
    assert json.loads((tmp_path / "latest.json").read_text())["plan"] == "a plan"
    assert (tmp_path / "latest.md").exists() and not (tmp_path / "latest.png").exists()
    assert "no chart: matplotlib is not installed" in capsys.readouterr().out
