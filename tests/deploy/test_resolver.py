"""The deployed resolver (resolver role): the host asks its own validating unbound, and
Postfix uses DANE for mail to the outside. The DANE behaviour itself (a signed zone, verified
and refused TLSA matches) is tests/integration/test_dane.py: this machine has no signed zone
out there to send to."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.deploy.stack import DEPLOY_MARKS

pytestmark = DEPLOY_MARKS


def postconf(name: str) -> str:
    done = subprocess.run(
        ["postconf", "-h", name], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


def test_the_host_resolves_through_its_own_unbound(deployed: dict[str, Any]) -> None:
    lines = Path("/etc/resolv.conf").read_text().splitlines()
    nameservers = [line.split()[1] for line in lines if line.startswith("nameserver")]
    assert nameservers == ["127.0.0.1"], lines
    assert "options trust-ad" in lines
    assert Path("/etc/unbound/upstream-resolv.conf").is_file()  # what `make down` restores
    # apt's mirror resolves through unbound (the playbook checked it before switching too)
    assert socket.getaddrinfo("deb.debian.org", 80, proto=socket.IPPROTO_TCP)


def test_postfix_uses_dane_for_mail_to_the_outside(deployed: dict[str, Any]) -> None:
    assert postconf("smtp_dns_support_level") == "dnssec"
    assert postconf("smtp_tls_security_level") == "dane"
