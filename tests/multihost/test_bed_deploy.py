"""site.yml on the bed's hosts: systemd as PID 1, Ansible over SSH, as on real servers.

Run by `make test-multihost` only (tests/conftest.py leaves this folder out otherwise).
MAILGLUE_BED_LAYOUT=single|split picks the hosts (default split); MAILGLUE_BED_KEEP=1 leaves
them running afterwards, for a look inside (`python -m tests.multihost.bed down` removes them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.stack import smoke
from tests.harness.smtp import send
from tests.multihost import bed
from tests.multihost.conftest import RESULTS

LAYOUT = os.environ.get("MAILGLUE_BED_LAYOUT", "split")
ANSIBLE = bed.REPO / "ansible"
PLAYBOOK = bed.REPO / ".venv-ansible/bin/ansible-playbook"
VAULT_PASSWORD = ANSIBLE / "inventories/split/vault-password.example"
VAULT_FILE = "inventories/split/group_vars/all/vault.yml"
RECAP = re.compile(
    r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def inventory() -> Iterator[Path]:
    directory = bed.up(LAYOUT)
    try:
        yield directory
    finally:
        if os.environ.get("MAILGLUE_BED_KEEP") != "1":
            bed.down()


def play(inventory: Path) -> tuple[int, dict[str, dict[str, int]], str]:
    vault = ["--vault-password-file", str(VAULT_PASSWORD)]
    done = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), *vault, "site.yml"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        check=False,
    )
    recap = {
        m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
        for m in RECAP.findall(done.stdout)
    }
    return done.returncode, recap, done.stdout[-4000:]


@pytest.fixture(scope="module")
def deployed(inventory: Path) -> dict[str, Any]:
    first_rc, first, first_tail = play(inventory)
    assert first_rc == 0, first_tail
    second_rc, second, second_tail = play(inventory)
    return {"first": first, "second": second, "second_rc": second_rc, "tail": second_tail}


def hosts() -> tuple[bed.Host, ...]:
    return bed.LAYOUTS[LAYOUT]


def users() -> dict[str, str]:
    vault = ["--vault-password-file", str(VAULT_PASSWORD)]
    text = subprocess.run(
        [str(PLAYBOOK.with_name("ansible-vault")), "view", *vault, VAULT_FILE],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    passwords: dict[str, str] = yaml.safe_load(text)["vault_user_passwords"]
    return passwords


def test_second_run_changes_nothing(deployed: dict[str, Any]) -> None:
    for host, counts in deployed["second"].items():
        RESULTS.append((host, "second run changed", str(counts["changed"])))
    assert deployed["second_rc"] == 0, deployed["tail"]
    assert all(c["changed"] == 0 for c in deployed["second"].values()), deployed["second"]


def test_every_host_runs_clean_under_systemd(deployed: dict[str, Any]) -> None:
    key = bed.ensure_key()
    states = {}
    for host in hosts():
        state = bed.ssh(host, key, "systemctl is-system-running").stdout.decode().strip()
        failed = bed.ssh(host, key, "systemctl --failed --plain --no-legend").stdout.decode()
        states[host.fqdn] = (state, failed.strip())
        RESULTS.append((host.fqdn, "systemd", state + (f" ({failed.strip()})" if failed else "")))
    assert all(state == "running" for state, _ in states.values()), states


def test_mailglue_daemons_are_notify_units_that_reload(deployed: dict[str, Any]) -> None:
    """A reload (SIGHUP) keeps the process: same main PID, still active."""
    key = bed.ensure_key()
    for host in (h for h in hosts() if "mx" in h.groups):
        for unit in ("mailglue-milter", "mailglue-policy"):
            before = unit_state(host, unit)
            reload = bed.ssh(host, key, f"systemctl reload {unit}")
            time.sleep(1)
            after = unit_state(host, unit)
            RESULTS.append((host.fqdn, f"{unit} reload", f"{before} -> {after}"))
            assert reload.returncode == 0, reload.stderr
            assert before["Type"] == "notify" and before["ActiveState"] == "active", before
            assert after == before, (before, after)


def unit_state(host: bed.Host, unit: str) -> dict[str, str]:
    """Type, ActiveState, MainPID (by name: `systemctl show` prints them in its own order)."""
    show = f"systemctl show -p Type -p ActiveState -p MainPID {unit}"
    lines = bed.ssh(host, bed.ensure_key(), show).stdout.decode().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def imap_find(host: str, user: str, password: str, subject: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with smoke.imap_login(user, password, host=host) as imap:
            imap.select("INBOX", readonly=True)
            status, data = imap.search(None, "SUBJECT", f'"{subject}"')
            if status == "OK" and data and data[0]:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def test_mail_through_each_mx_reaches_the_mailbox(deployed: dict[str, Any]) -> None:
    """Another domain's MTA on port 25 of each MX; the mail read back over IMAPS."""
    password = users()["alice"]
    store = next(h for h in hosts() if "mailstore" in h.groups)
    # Cyrus makes the mailbox at the first login; the policy refuses mail for one that is missing.
    with smoke.imap_login("alice", password, host=store.address):
        pass
    outcomes = {}
    for mx in (h for h in hosts() if "mx" in h.groups):
        code, found = send_to_alice(mx, store, password)
        outcomes[mx.fqdn] = (code, found)
        RESULTS.append((mx.fqdn, "25 -> IMAPS", f"DATA {code}, in INBOX: {found}"))
    assert all(code == 250 and found for code, found in outcomes.values()), outcomes


def send_to_alice(mx: bed.Host, store: bed.Host, password: str) -> tuple[int | None, bool]:
    subject = f"via {mx.name} {uuid.uuid4().hex[:10]}"
    msg = EmailMessage()
    msg["From"] = "friend@example.net"
    msg["To"] = "alice@example.org"
    msg["Subject"] = subject
    msg.set_content("hello from the bed\n")
    sender, rcpt = "friend@example.net", ["alice@example.org"]
    tx = send((mx.address, 25), sender, rcpt, msg.as_bytes(), starttls=True)
    code = tx.data.code if tx.data is not None else None
    return code, code == 250 and imap_find(store.address, "alice", password, subject, 60)


def last_event(host: bed.Host) -> dict[str, Any]:
    line = bed.ssh(host, bed.ensure_key(), "tail -n 1 /var/log/mailglue/milter.log").stdout
    event: dict[str, Any] = json.loads(line)
    return event


def test_a_stopped_scanner_fails_over_to_the_other(deployed: dict[str, Any]) -> None:
    scanners = [h for h in hosts() if "scanners" in h.groups]
    if len(scanners) < 2:
        pytest.skip("one scanner host: nothing to fail over to")
    key = bed.ensure_key()
    mx = next(h for h in hosts() if "mx" in h.groups)
    store = next(h for h in hosts() if "mailstore" in h.groups)
    bed.ssh(scanners[0], key, "systemctl stop spamd clamd", check=True)
    try:
        code, found = send_to_alice(mx, store, users()["alice"])
        event = last_event(mx)
    finally:
        bed.ssh(scanners[0], key, "systemctl start spamd clamd", check=True)
    used = (event["spam"]["backend"], event["virus"]["backend"])
    RESULTS.append((scanners[0].fqdn, "stopped: mail via", f"{used}, DATA {code}, found {found}"))
    assert code == 250 and found
    assert all(scanners[1].fqdn in backend for backend in used), used


def test_a_stopped_mx_leaves_the_other_serving(deployed: dict[str, Any]) -> None:
    mxs = [h for h in hosts() if "mx" in h.groups]
    if len(mxs) < 2:
        pytest.skip("one MX host")
    key = bed.ensure_key()
    store = next(h for h in hosts() if "mailstore" in h.groups)
    bed.ssh(mxs[0], key, "systemctl stop postfix", check=True)
    try:
        with pytest.raises(OSError):
            socket.create_connection((mxs[0].address, 25), timeout=5).close()
        code, found = send_to_alice(mxs[1], store, users()["alice"])
    finally:
        bed.ssh(mxs[0], key, "systemctl start postfix", check=True)
    RESULTS.append((mxs[0].fqdn, "stopped: other MX", f"DATA {code}, found {found}"))
    assert code == 250 and found


def test_with_the_directory_host_stopped_mail_flows_and_members_log_in(
    deployed: dict[str, Any],
) -> None:
    """Each mx and mailstore reads its own replica on loopback: the provider's slapd stopped,
    the policy still knows alice (RCPT), the milter routes her mail, Cyrus's saslauthd still
    checks her password (the IMAPS login that finds the message)."""
    providers = [h for h in hosts() if "ldap" in h.groups]
    readers = [h for h in hosts() if {"mx", "mailstore"} & set(h.groups)]
    if any("ldap" in h.groups for h in readers):
        pytest.skip("the directory shares a host with mail: no replica to fall back on")
    key = bed.ensure_key()
    store = next(h for h in readers if "mailstore" in h.groups)
    for provider in providers:
        bed.ssh(provider, key, "systemctl stop slapd", check=True)
    try:
        outcomes = {
            mx.fqdn: send_to_alice(mx, store, users()["alice"])
            for mx in readers
            if "mx" in mx.groups
        }
    finally:
        for provider in providers:
            bed.ssh(provider, key, "systemctl start slapd", check=True)
    for fqdn, (code, found) in outcomes.items():
        RESULTS.append((fqdn, "directory stopped", f"DATA {code}, found {found}"))
    assert all(code == 250 and found for code, found in outcomes.values()), outcomes
