"""site.yml on the bed's hosts: systemd as PID 1, Ansible over SSH, as on real servers.

Run by `make test-multihost` only (tests/conftest.py leaves this folder out otherwise).
MAILGLUE_BED_LAYOUT=single|split picks the hosts (default split); MAILGLUE_BED_KEEP=1 leaves
them running afterwards, for a look inside (`python -m tests.multihost.bed down` removes them).
"""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.deploy.browser import (
    browser,  # noqa: F401  (the fixture)
    compose_and_send,
    logged_in,
    wait,
)
from tests.deploy.mailuser import OUTSIDE, RemoteMx, dkim_signatures, outside_mx
from tests.deploy.stack import smoke
from tests.harness.managesieve import ManageSieve
from tests.harness.smtp import send
from tests.multihost import bed, load
from tests.multihost.conftest import RECONCILIATION, RESULTS

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


def inventory_vars() -> dict[str, Any]:
    """The layout's inventory group_vars/all (with Jinja expressions left as text)."""
    path = ANSIBLE / f"inventories/{LAYOUT}/group_vars/all/main.yml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def vault() -> dict[str, Any]:
    vault_password = ["--vault-password-file", str(VAULT_PASSWORD)]
    text = subprocess.run(
        [str(PLAYBOOK.with_name("ansible-vault")), "view", *vault_password, VAULT_FILE],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    secrets: dict[str, Any] = yaml.safe_load(text)
    return secrets


def users() -> dict[str, str]:
    """Members' passwords: the single inventory's plain development values, or the vault's."""
    if LAYOUT == "single":
        return {user["uid"]: user["password"] for user in inventory_vars()["ldap_users"]}
    passwords: dict[str, str] = vault()["vault_user_passwords"]
    return passwords


def admin_password() -> str:
    """The Cyrus admin's (`mail_admin_user`, cyrus) password."""
    if LAYOUT == "single":
        return str(inventory_vars()["mail_admin_password"])
    return str(vault()["vault_mail_admin_password"])


def store_of(uid: str) -> bed.Host:
    """The mail store that holds a member's mailbox: their mail_host, or the first store."""
    stores = [h for h in hosts() if "mailstore" in h.groups]
    entry = next(u for u in inventory_vars()["ldap_users"] if u["uid"] == uid)
    if "mail_host" in entry:
        return stores[-1]  # the split inventory's only mail_host: "groups['mailstore'] | last"
    return stores[0]


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


# What only the hosts that use them may reach: pre-authenticated LMTP files mail in any mailbox
# unscanned, clamd takes SHUTDOWN from anyone who connects, spamd learns what it is told. The
# MX hosts scan and deliver; the mail stores' `mailglue learn` teaches spamd (TELL).
INTERNAL_PORTS = {
    ("mailstore", 2003): ("mx",),
    ("scanners", 783): ("mx", "mailstore"),
    ("scanners", 3310): ("mx",),
}


def connects(client: bed.Host | None, server: bed.Host, port: int) -> bool:
    """A TCP connection from `client` (None: this machine, the bed's gateway) to the port."""
    probe = f"exec 3<>/dev/tcp/{server.address}/{port}"
    if client is None:
        command = ["timeout", "5", "bash", "-c", probe]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0
    return bed.ssh(client, bed.ensure_key(), f"timeout 5 bash -c '{probe}'").returncode == 0


def test_internal_ports_are_open_only_to_the_hosts_that_use_them(
    deployed: dict[str, Any],
) -> None:
    """LMTP on the mail stores, clamd on the scanners: each MX connects; spamd: each MX and
    each mail store; any other host (the directory, this machine, ...) is refused."""
    everyone = hosts()
    outcomes = {}
    for (group, port), users_of_it in INTERNAL_PORTS.items():
        for server in (h for h in everyone if group in h.groups):
            for client in (*everyone, None):
                if client == server:
                    continue
                name = client.fqdn if client else "bed host"
                allowed = client is not None and bool(set(users_of_it) & set(client.groups))
                got = connects(client, server, port)
                outcomes[(name, f"{server.fqdn}:{port}")] = (got, allowed)
    wrong = {where: got for where, (got, allowed) in outcomes.items() if got != allowed}
    RESULTS.append(("all", "internal ports", f"{len(outcomes)} probes, {len(wrong)} wrong"))
    # both kinds probed; on one host (single layout) only this machine, always refused
    kinds = {allowed for _, allowed in outcomes.values()}
    assert kinds == ({True, False} if len(everyone) > 1 else {False}), outcomes
    assert not wrong, wrong


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


def mail(sender: str, recipient: str, subject: str, text: str) -> bytes:
    """A plain one-part message, as the journeys below send it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg.set_content(text)
    return msg.as_bytes()


def test_a_member_sends_through_each_mx_on_submission(deployed: dict[str, Any]) -> None:
    """Alice logs in on 587 of each MX (STARTTLS, then AUTH, as her mail client does) and
    writes to bob; bob finds it in his INBOX on the mail store."""
    passwords = users()
    store = next(h for h in hosts() if "mailstore" in h.groups)
    with smoke.imap_login("bob", passwords["bob"], host=store.address):
        pass  # Cyrus makes bob's mailbox at his first login
    outcomes = {}
    for mx in (h for h in hosts() if "mx" in h.groups):
        subject = f"submitted via {mx.name} {uuid.uuid4().hex[:10]}"
        raw = mail("alice@example.org", "bob@example.org", subject, "sent from a mail client\n")
        tx = send(
            (mx.address, 587),
            "alice@example.org",
            ["bob@example.org"],
            raw,
            login=("alice", passwords["alice"]),
        )
        code = tx.data.code if tx.data is not None else None
        found = code == 250 and imap_find(store.address, "bob", passwords["bob"], subject, 60)
        outcomes[mx.fqdn] = (code, found)
        RESULTS.append((mx.fqdn, "587 AUTH -> IMAPS", f"{tx.mail} / DATA {code}, found {found}"))
    assert all(code == 250 and found for code, found in outcomes.values()), outcomes


@pytest.fixture(scope="module")
def outside(deployed: dict[str, Any]) -> Iterator[RemoteMx]:
    """The bed's outside world: a stand-in MX on this machine's bridge address, where the MX
    hosts relay all mail not ours (`mail_relayhost` in bed.HOST_VARS)."""

    def flush() -> None:  # every host's Postfix retries its deferred mail now
        for host in hosts():
            bed.ssh(host, bed.ensure_key(), "postqueue -f")

    with outside_mx(bed.GATEWAY, bed.OUTSIDE_MX_PORT, flush) as remote:
        yield remote


def dkim_results(message: bytes) -> dict[str, bool]:
    """Each DKIM signature and whether it verifies against the record to publish: the .txt
    beside the first MX host's key, as `mailglue dns` there prints it."""
    first_mx = next(h for h in hosts() if "mx" in h.groups)

    def key_file(selector: str) -> str:
        path = f"/etc/opendkim/keys/example.org/{selector}.txt"
        return bed.ssh(first_mx, bed.ensure_key(), f"cat {path}").stdout.decode()

    return dkim_signatures(message, key_file=key_file)


def signed(received: bytes | None) -> dict[str, bool] | str:
    return dkim_results(received) if received is not None else "not received"


def test_each_mx_signs_with_the_one_published_key(outside: RemoteMx) -> None:
    """Alice writes to a friend elsewhere through 587 of each MX; what the friend's MX receives
    carries DKIM signatures that verify against the one record the domain publishes (each MX
    making its own key would leave all but one failing)."""
    password = users()["alice"]
    outcomes = {}
    for mx in (h for h in hosts() if "mx" in h.groups):
        subject = f"signed via {mx.name} {uuid.uuid4().hex[:10]}"
        raw = mail("alice@example.org", OUTSIDE, subject, "signed, I hope\n")
        tx = send((mx.address, 587), "alice@example.org", [OUTSIDE], raw, login=("alice", password))
        assert tx.data is not None and tx.data.code == 250, tx
        outcomes[mx.fqdn] = signed(outside.find(subject, timeout=90))
        RESULTS.append((mx.fqdn, "DKIM on 587 mail", str(outcomes[mx.fqdn])))
    for result in outcomes.values():
        assert isinstance(result, dict) and result and all(result.values()), outcomes


SIEVE_SENDS = """require ["copy", "vacation"];
if header :contains "Subject" "forward-me" {{
    redirect :copy "{forward_to}";
}}
vacation :days 1 :subject "Away {mark}" :addresses ["bob@example.org"] "Away until Monday.";
"""


def test_what_sieve_sends_from_the_mail_store_leaves_through_an_mx_signed(
    outside: RemoteMx,
) -> None:
    """Bob sets a filter on his mail store from his own client (ManageSieve, STARTTLS, login)
    that forwards a copy of some mail to his other address and answers with a vacation
    reply. A friend elsewhere writes to him: the forwarded copy and the reply must reach the
    outside world, each with a DKIM signature that verifies, so they went through an MX (a mail
    store's own MTA would send them unsigned, unscanned, from outside our SPF record). Under
    systemd this is also the only test of Cyrus's sandbox letting its sendmail run."""
    password = users()["bob"]
    store = next(h for h in hosts() if "mailstore" in h.groups)
    mx = next(h for h in hosts() if "mx" in h.groups)
    mark = uuid.uuid4().hex[:10]
    forward_to = f"bob.elsewhere.{mark}@example.net"
    friend = f"friend.{mark}@example.net"  # vacation answers each sender once a day
    with smoke.imap_login("bob", password, host=store.address):
        pass  # his mailbox exists from his first login
    with ManageSieve(store.address) as sieve:
        sieve.login("bob", password)
        before = [name for name, active in sieve.scripts_with_state() if active]
        sieve.put("bed", SIEVE_SENDS.format(mark=mark, forward_to=forward_to))
        sieve.activate("bed")
    try:
        subject = f"forward-me {mark}"
        raw = mail(friend, "bob@example.org", subject, "please pass it on\n")
        tx = send((mx.address, 25), friend, ["bob@example.org"], raw, starttls=True)
        assert tx.data is not None and tx.data.code == 250, tx
        forwarded = outside.find(forward_to, timeout=90)  # its envelope recipient
        reply = outside.find(f"Away {mark}", timeout=90)
    finally:
        with ManageSieve(store.address) as sieve:
            sieve.login("bob", password)
            sieve.activate(before[0] if before else "")  # his Junk rule again
            sieve.delete("bed")
    shown = {"forwarded copy": signed(forwarded), "vacation reply": signed(reply)}
    RESULTS.append((store.fqdn, "Sieve mail to the outside", str(shown)))
    for result in shown.values():
        assert isinstance(result, dict) and result and all(result.values()), shown


def test_a_post_to_a_list_reaches_each_member_once_under_systemd(outside: RemoteMx) -> None:
    """Alice writes to the staff list from her mail client (587). Mailman, under systemd here,
    takes it within her session and sends it on: bob finds one copy in his mailbox, and the
    outside member's copy reaches the outside world with the list's List-Id, signed."""
    if LAYOUT != "single":
        pytest.skip("the split inventory runs no mailing lists")
    passwords = users()
    (host,) = hosts()
    with smoke.imap_login("bob", passwords["bob"], host=host.address):
        pass  # his mailbox exists from his first login
    subject = f"list post {uuid.uuid4().hex[:10]}"
    raw = mail("alice@example.org", "staff@example.org", subject, "The minutes of today.\n")
    login = ("alice", passwords["alice"])
    tx = send((host.address, 587), "alice@example.org", ["staff@example.org"], raw, login=login)
    assert tx.data is not None and tx.data.code == 250, tx
    outside_copy = outside.find(subject, timeout=120)
    in_bobs_box = imap_find(host.address, "bob", passwords["bob"], subject, 120)
    copies = sum(mailbox_counts(host, "bob", subject).values())  # Mailman prefixes "[Staff]"
    shown = {
        "bob's copies": copies,
        "outside copy": signed(outside_copy),
        "List-Id": bool(outside_copy and b"List-Id:" in outside_copy),
    }
    RESULTS.append((host.fqdn, "list post", str(shown)))
    assert in_bobs_box and copies == 1, shown
    assert outside_copy is not None and b"<staff.example.org>" in outside_copy, shown
    signatures = shown["outside copy"]
    assert isinstance(signatures, dict) and signatures and all(signatures.values()), shown


def restart_everywhere(unit: str) -> list[str]:
    """Restart `unit` on every host that has it (what its interval would do, now)."""
    key = bed.ensure_key()
    restarted = []
    for host in hosts():
        if bed.ssh(host, key, f"systemctl cat {unit} >/dev/null 2>&1").returncode == 0:
            assert bed.ssh(host, key, f"systemctl restart {unit}").returncode == 0, host
            restarted.append(host.name)
    return restarted


def bayes_ham_count(scanner: bed.Host) -> int:
    """How many ham messages the scanner's spamd has learned (its Bayes database)."""
    dump = "runuser -u debian-spamd -- sa-learn --dump magic"
    shown = bed.ssh(scanner, bed.ensure_key(), dump).stdout.decode()
    found = re.search(r"^\S+\s+0\s+(\d+)\s+0\s+non-token data: nham$", shown, re.M)
    return int(found.group(1)) if found else 0


ADMIN = "cyrus"  # mail_admin_user


def in_learnspam(store: bed.Host, token: str) -> bool:
    """Whether a message carrying `token` is still in the store's LearnSpam (the admin reads
    it; members may only put mail there)."""
    with smoke.imap_login(ADMIN, admin_password(), host=store.address) as imap:
        status, data = imap.select("LearnSpam", readonly=True)
        assert status == "OK", data
        status, data = imap.search(None, "SUBJECT", f'"{token}"')
        return status == "OK" and bool(data and data[0])


def test_what_members_file_in_learnspam_is_learned_on_every_mailstore(
    deployed: dict[str, Any],
) -> None:
    """A member on each mail store (alice; carol on the last store of the split layout) finds
    a message the filter tagged wrongly and moves it into LearnSpam from their mail client.
    Once `mailglue learn` has run, every scanner's spamd has learned each as ham and the
    folders are empty of them: on every mail store, not only where an MX's 127.0.0.1 would
    find one."""
    scanners = [h for h in hosts() if "scanners" in h.groups]  # each has its own Bayes
    passwords = users()
    members: dict[str, str] = {}  # the first member of each store
    for entry in inventory_vars()["ldap_users"]:
        members.setdefault(store_of(entry["uid"]).name, entry["uid"])
    tokens = {}
    before = {scanner.name: bayes_ham_count(scanner) for scanner in scanners}
    for uid in members.values():
        store = store_of(uid)
        token = uuid.uuid4().hex
        raw = (
            f"From: newsletter@example.net\r\nTo: {uid}@example.org\r\n"
            f"Subject: wanted {token}\r\nMessage-ID: <{token}@example.net>\r\n"
            "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=3.5 required=3.0 tests=X=3.5\r\n"
            f"\r\nthe monthly report you subscribed to, issue {token}\r\n"
        ).encode()
        with smoke.imap_login(uid, passwords[uid], host=store.address) as imap:
            status, data = imap.append("LearnSpam", None, None, raw)
            assert status == "OK", (uid, data)
        tokens[uid] = (store, token)
    restarted = restart_everywhere("mailglue-learn")
    deadline = time.monotonic() + 120
    left = dict(tokens)
    while left and time.monotonic() < deadline:
        left = {uid: (s, t) for uid, (s, t) in left.items() if in_learnspam(s, t)}
        time.sleep(2)
    learned = {s.name: bayes_ham_count(s) - before[s.name] for s in scanners}
    shown = {"learn runs on": restarted, "still in LearnSpam": sorted(left), "ham learned": learned}
    RESULTS.append(("all", "LearnSpam", str(shown)))
    assert not left and all(n >= len(tokens) for n in learned.values()), shown


def quota_limit_kib(store: bed.Host, uid: str) -> int | None:
    """The STORAGE limit the member's mail client is shown for their INBOX (GETQUOTAROOT)."""
    with smoke.imap_login(uid, users()[uid], host=store.address) as imap:
        status, data = imap.getquotaroot("INBOX")
    assert status == "OK", data
    text = b" ".join(part for group in data for part in group if isinstance(part, bytes))
    found = re.search(rb"STORAGE \d+ (\d+)", text)
    return int(found.group(1)) if found else None


def test_members_see_their_ldap_quota_on_their_own_mailstore(deployed: dict[str, Any]) -> None:
    """Each member with a quota in LDAP (quota_kib) logs in on the store that holds their
    mailbox and is shown that quota once `mailglue quota` has run."""
    wanted = {
        u["uid"]: int(u["quota_kib"]) for u in inventory_vars()["ldap_users"] if "quota_kib" in u
    }
    assert wanted, "the inventory gives no member a quota"
    for uid in wanted:
        quota_limit_kib(store_of(uid), uid)  # Cyrus makes the mailbox at the first login
    restarted = restart_everywhere("mailglue-quota")
    deadline = time.monotonic() + 90
    shown = {uid: quota_limit_kib(store_of(uid), uid) for uid in wanted}
    while shown != wanted and time.monotonic() < deadline:
        time.sleep(2)
        shown = {uid: quota_limit_kib(store_of(uid), uid) for uid in wanted}
    RESULTS.append(("all", "quotas", f"{shown} (mailglue-quota on {restarted})"))
    assert shown == wanted, (shown, restarted)


def test_a_member_reads_and_writes_in_webmail_under_systemd(
    browser: WebDriver,  # noqa: F811  (the fixture imported above)
    outside: RemoteMx,
) -> None:
    """Webmail as nginx, PHP-FPM and Roundcube run under systemd: alice opens the host's
    address in a real browser, logs in, finds a letter from a friend elsewhere in her inbox
    and answers it to the friend and to bob. Bob finds it in his mailbox; the friend's MX gets
    it signed."""
    if LAYOUT != "single":
        pytest.skip("the split inventory runs no webmail")
    (host,) = hosts()
    base = f"https://{host.address}"
    passwords = users()
    mark = uuid.uuid4().hex[:10]
    incoming = f"hello alice {mark}"
    friend = f"friend.{mark}@example.net"
    raw = mail(friend, "alice@example.org", incoming, "Are you there?\n")
    tx = send((host.address, 25), friend, ["alice@example.org"], raw, starttls=True)
    assert tx.data is not None and tx.data.code == 250, tx
    logged_in(browser, "alice", passwords["alice"], base)
    wait(browser, ec.text_to_be_present_in_element((By.ID, "messagelist"), incoming))
    answer = f"re webmail {mark}"
    compose_and_send(browser, [friend, "bob@example.org"], answer, "Yes, here.", base)
    at_the_friend = outside.find(answer, timeout=90)
    in_bobs_box = imap_find(host.address, "bob", passwords["bob"], answer, 60)
    shown = {"in bob's INBOX": in_bobs_box, "at the friend's MX": signed(at_the_friend)}
    RESULTS.append((host.fqdn, "webmail", str(shown)))
    assert in_bobs_box, shown
    signatures = shown["at the friend's MX"]
    assert isinstance(signatures, dict) and signatures and all(signatures.values()), shown


def send_to_alice(mx: bed.Host, store: bed.Host, password: str) -> tuple[int | None, bool]:
    subject = f"via {mx.name} {uuid.uuid4().hex[:10]}"
    raw = mail("friend@example.net", "alice@example.org", subject, "hello from the bed\n")
    tx = send((mx.address, 25), "friend@example.net", ["alice@example.org"], raw, starttls=True)
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


# --- under load: a fault in the middle, then the count (tests/multihost/load.py) -------------

LOAD_SIZE = 60
LOAD_SENDERS = 6


def mailbox_counts(store: bed.Host, user: str, tag: str) -> collections.Counter[str]:
    """Copies per subject in the user's INBOX and Junk (spamd may tag a message)."""
    counts: collections.Counter[str] = collections.Counter()
    with smoke.imap_login(user, users()[user], host=store.address) as imap:
        for folder in ("INBOX", "INBOX.Junk"):
            status, _ = imap.select(folder, readonly=True)
            if status == "OK":
                counts += load.stored_subjects(imap, tag)
    return counts


def loaded(
    fault_name: str,
    mxs: list[bed.Host],
    fault: Callable[[], Any],
    restore: Callable[[], Any],
) -> load.Reconciliation:
    """LOAD_SIZE letters to alice over `mxs`; `fault` a third of the way in; `restore` after
    the first attempts; every 4xx sent again; the mailbox counted before and after."""
    store = next(h for h in hosts() if "mailstore" in h.groups)
    tag = f"load {uuid.uuid4().hex[:8]}"
    letters = [load.Letter(f"{tag} {i:03d}", "alice@example.org") for i in range(LOAD_SIZE)]
    addresses = [mx.address for mx in mxs]
    try:
        done = load.run_load(addresses, letters, LOAD_SENDERS, LOAD_SIZE // 3, fault)
    finally:
        restore()
    time.sleep(2)
    before_retry = mailbox_counts(store, "alice", tag)
    load.retry(done, addresses)
    after = mailbox_counts(store, "alice", tag)
    counts = load.Reconciliation.of(done.attempts, after, before_retry)
    RECONCILIATION.append((fault_name, counts))
    odd = {s: a for s, a in done.attempts.items() if a[0].outcome != load.ACCEPTED}
    RESULTS.append((fault_name, "first replies other than 250", str(odd)[:300]))
    return counts


def stopping(host: bed.Host, units: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The fault (stop the units) and its end (start them again) for `loaded`."""
    key = bed.ensure_key()
    return (
        lambda: bed.ssh(host, key, f"systemctl stop {units}", check=True),
        lambda: bed.ssh(host, key, f"systemctl start {units}", check=True),
    )


def test_reloading_milter_and_policy_under_load_gives_no_4xx(deployed: dict[str, Any]) -> None:
    """systemctl reload of both mailglue daemons, three times, while six senders send."""
    mx = next(h for h in hosts() if "mx" in h.groups)
    key = bed.ensure_key()

    def reloads() -> None:
        for _ in range(3):
            for unit in ("mailglue-milter", "mailglue-policy"):
                bed.ssh(mx, key, f"systemctl reload {unit}", check=True)
            time.sleep(1)

    counts = loaded(f"{mx.name}: reloads", [mx], reloads, lambda: None)
    assert counts.accepted == counts.sent, counts  # no 4xx at all
    assert counts.clean, counts


def test_a_scanner_stopped_mid_load_loses_nothing(deployed: dict[str, Any]) -> None:
    scanners = [h for h in hosts() if "scanners" in h.groups]
    if len(scanners) < 2:
        pytest.skip("one scanner host: nothing to fail over to")
    mxs = [h for h in hosts() if "mx" in h.groups]
    counts = loaded(f"{scanners[0].name} stopped", mxs, *stopping(scanners[0], "spamd clamd"))
    assert counts.clean, counts


def test_an_mx_stopped_mid_load_loses_nothing(deployed: dict[str, Any]) -> None:
    """Senders move on to the other MX when one refuses connections; sessions the stop cut
    off are sent again (Cyrus drops a second copy of a message it already has)."""
    mxs = [h for h in hosts() if "mx" in h.groups]
    if len(mxs) < 2:
        pytest.skip("one MX host")
    counts = loaded(f"{mxs[0].name} stopped", mxs, *stopping(mxs[0], "postfix"))
    assert counts.clean, counts


def test_a_member_on_the_second_mailstore_gets_mail_there_within_the_session(
    deployed: dict[str, Any],
) -> None:
    """Carol's LDAP mailHost names the last mailstore: one message to alice and carol through
    each MX is in both mailboxes, each on its own store, when the sender gets its 250."""
    stores = [h for h in hosts() if "mailstore" in h.groups]
    if len(stores) < 2:
        pytest.skip("one mailstore host")
    first, last = stores[0], stores[-1]
    passwords = users()
    for user, store in (("alice", first), ("carol", last)):
        with smoke.imap_login(user, passwords[user], host=store.address):
            pass  # Cyrus makes the mailbox at the first login
    outcomes = {}
    for mx in (h for h in hosts() if "mx" in h.groups):
        subject = f"both stores via {mx.name} {uuid.uuid4().hex[:8]}"
        letter = load.Letter(subject, "alice@example.org")
        msg = letter.render()
        rcpts = ["alice@example.org", "carol@example.org"]
        tx = send((mx.address, 25), load.SENDER, rcpts, msg, starttls=True)
        code = tx.data.code if tx.data is not None else None
        # Both copies are there at once: the 250 came after both stores had the message.
        at_once = {
            user: mailbox_counts(store, user, subject)[subject]
            for user, store in (("alice", first), ("carol", last))
        }
        event = last_event(mx)
        backends = {r["recipient"]: r["backend"] for r in event.get("recipients", [])}
        outcomes[mx.fqdn] = (code, at_once, backends)
        RESULTS.append((mx.fqdn, "alice + carol", f"DATA {code}, copies {at_once}, {backends}"))
    for code, at_once, backends in outcomes.values():
        assert code == 250
        assert at_once == {"alice": 1, "carol": 1}, at_once
        assert last.fqdn in backends["carol@example.org"], backends
        assert first.fqdn in backends["alice@example.org"], backends
