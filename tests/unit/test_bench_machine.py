"""The benchmark's machine line names Postfix's version on a host without a main.cf.

The full benchmark runs on a bare host (its own Postfix instances in temporary directories);
`postconf -h mail_version` then failed and the report printed postconf's error as the version.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.report import machine


@pytest.mark.skipif(not Path("/usr/sbin/postconf").exists(), reason="Postfix not installed")
def test_postfix_version_without_a_main_cf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))  # an empty configuration directory
    assert re.fullmatch(r"\d+\.\d+\.\d+", machine()["postfix"])
