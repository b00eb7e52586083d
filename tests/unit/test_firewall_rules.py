"""The firewall role's nftables file, rendered by Ansible's own template module (its filters)
and checked by `nft -c`, the same validation the role runs before writing it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
ANSIBLE = REPO / ".venv-ansible/bin/ansible"
TEMPLATE = REPO / "ansible/roles/firewall/templates/etc/nftables.d/mailglue.nft.j2"

pytestmark = pytest.mark.skipif(not ANSIBLE.exists(), reason="make ansible-venv first")


def rendered(
    tmp_path: Path, ports: list[dict[str, object]], addresses: dict[str, list[str]]
) -> str:
    assert shutil.which("nft"), "nftables is one of scripts/install-debian-packages.sh's packages"
    variables = tmp_path / "vars.json"
    variables.write_text(
        json.dumps({"firewall_guarded_ports": ports, "firewall_addresses_of": addresses})
    )
    out = tmp_path / "mailglue.nft"
    run = subprocess.run(
        [
            str(ANSIBLE), "localhost", "-c", "local", "-m", "ansible.builtin.template",
            "-a", f"src={TEMPLATE} dest={out} validate='nft -c -f %s'",
            "-e", f"@{variables}",
        ],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return out.read_text()


def test_each_port_is_open_to_its_hosts_addresses_and_reset_for_others(tmp_path: Path) -> None:
    text = rendered(
        tmp_path,
        [
            {"name": "spamd", "port": 783, "sources": ["mx1", "mx2"]},
            {"name": "clamd", "port": 3310, "sources": ["mx1"]},
        ],
        {"mx1": ["192.0.2.11", "2001:db8::11"], "mx2": ["192.0.2.12"]},
    )
    lines = [line.strip() for line in text.splitlines()]
    assert "tcp dport 783 ip saddr { 192.0.2.11, 192.0.2.12 } accept" in lines
    assert "tcp dport 783 ip6 saddr { 2001:db8::11 } accept" in lines
    assert "tcp dport 3310 ip saddr { 192.0.2.11 } accept" in lines
    for port, name in ((783, "spamd"), (3310, "clamd")):
        reset = f'tcp dport {port} counter reject with tcp reset comment "{name} from elsewhere"'
        assert reset in lines
    # loopback first, then per port the accepts before the reset
    assert lines.index('iif "lo" accept') < lines.index(
        "tcp dport 783 ip saddr { 192.0.2.11, 192.0.2.12 } accept"
    )


def test_a_port_whose_hosts_have_only_ipv4_gets_no_ipv6_rule(tmp_path: Path) -> None:
    text = rendered(
        tmp_path,
        [{"name": "lmtp", "port": 2003, "sources": ["mx1"]}],
        {"mx1": ["192.0.2.11"]},
    )
    assert "ip6 saddr" not in text  # an empty set would not load
    assert "tcp dport 2003 ip saddr { 192.0.2.11 } accept" in text
