"""`mailglue dns --check` against a real authoritative server (NSD on loopback) serving what
an admin published: everything, then everything but the DMARC record, then an old DKIM key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from milters.dns.records import Facts, all_records
from tests.harness.nsd import Nsd
from tests.unit.test_dns import OPENDKIM_TXT, PUBLIC_KEY

DMARC = ("_dmarc.example.org.", "TXT")
DKIM = ("mail._domainkey.example.org.", "TXT")


def zone_lines(
    facts: Facts, skip: tuple[str, str] | None = None, replace: str | None = None
) -> str:
    lines = []
    for record in all_records(facts):
        if (record.name, record.type) == skip:
            if replace is None:
                continue
            record = type(record)(record.name, record.type, replace, record.why)
        lines.append(record.line())
    return "\n".join(lines) + "\n"


@pytest.fixture
def dns_yaml(tmp_path: Path) -> Path:
    key_file = tmp_path / "mail.txt"
    key_file.write_text(OPENDKIM_TXT, encoding="utf-8")
    config = tmp_path / "dns.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": "mail.example.org",
                "addresses": ["192.0.2.25"],
                "domains": [
                    {
                        "name": "example.org",
                        "dkim": [{"selector": "mail", "key_file": str(key_file)}],
                        "dmarc": {"policy": "quarantine", "reports": "postmaster@example.org"},
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    return config


@pytest.fixture
def nsd(tmp_path: Path) -> Iterator[Nsd]:
    server = Nsd(tmp_path / "nsd", "example.org")
    yield server
    server.stop()


def check(config: Path, server: Nsd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "milters.cli",
            "dns",
            "--config",
            str(config),
            "--check",
            "--server",
            server.server,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def facts_of(config: Path) -> Facts:
    from milters.dns.config import load_dns_config

    return load_dns_config(config)


def test_what_is_published_passes(dns_yaml: Path, nsd: Nsd) -> None:
    nsd.start(zone_lines(facts_of(dns_yaml)))
    done = check(dns_yaml, nsd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missing" not in done.stdout and "wrong" not in done.stdout


def test_a_missing_dmarc_record_is_named(dns_yaml: Path, nsd: Nsd) -> None:
    nsd.start(zone_lines(facts_of(dns_yaml), skip=DMARC))
    done = check(dns_yaml, nsd)
    assert done.returncode == 1
    bad = [line for line in done.stdout.splitlines() if line.startswith(("missing", "wrong"))]
    assert len(bad) == 1 and bad[0].startswith("missing _dmarc.example.org. TXT"), done.stdout


def test_an_old_dkim_key_is_named_wrong(dns_yaml: Path, nsd: Nsd) -> None:
    old = '"v=DKIM1; k=rsa; p=' + PUBLIC_KEY[::-1] + '"'
    nsd.start(zone_lines(facts_of(dns_yaml), skip=DKIM, replace=old))
    done = check(dns_yaml, nsd)
    assert done.returncode == 1
    assert "wrong   mail._domainkey.example.org. TXT" in done.stdout, done.stdout
