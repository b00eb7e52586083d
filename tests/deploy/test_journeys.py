"""Users' journeys on the deployed stack (`make up`'s single-host inventory, standard ports).

Each journey does what a member's mail client or an outside MTA does, from the first SMTP
command, and ends where the person would look: the recipient's folder over IMAPS, or the
"outside world" — a stand-in MX on loopback (Postfix's own smtp-sink), which the inventory's
`mail_relayhost` points at. Reply codes are checked too, but never alone.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.deploy.browser import BASE, logged_in, open_page, shown_error, wait
from tests.deploy.mailuser import (
    MX,
    OUTSIDE,
    SUBMISSION,
    RemoteMx,
    assert_delivered,
    attachments_of,
    dkim_signatures,
    dkim_verifies,
    from_outside,
    in_folder,
    just_under_the_size_limit,
    message,
    person,
    size_limit,
    submit,
    tagged_from_outside,
    token,
    with_attachment,
)
from tests.deploy.stack import (
    DEPLOY_MARKS,
    EICAR,
    ldap_as_root,
    member_dn,
    run_playbook,
    run_service_pass,
    smoke,
)
from tests.harness.managesieve import ManageSieve, SieveError
from tests.harness.smtp import send, tls_context

pytestmark = DEPLOY_MARKS

# --- sending: submission, relay, replies --------------------------------------------------------


def test_member_sends_to_a_colleague_on_587(deployed: dict[str, Any]) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    subject = f"lunch? {token()}"
    tx = submit(alice, [bob["mail"]], subject)
    assert_delivered(tx)
    headers = in_folder(bob, subject)
    assert headers is not None, "not in bob's INBOX"
    assert b"X-Spam-Status: No" in headers


def test_member_sends_to_the_outside_on_587(deployed: dict[str, Any], remote_mx: RemoteMx) -> None:
    alice = person(deployed, "alice")
    mark = token()
    assert_delivered(submit(alice, [OUTSIDE], f"to a friend {mark}"))
    received = remote_mx.find(mark)
    assert received is not None, "never reached the remote MX"
    assert b"X-Mail-Args: <alice@example.org>" in received
    assert f"X-Rcpt-Args: <{OUTSIDE}>".encode() in received
    assert b"DKIM-Signature:" in received and dkim_verifies(received), received[:2000]


def test_outgoing_mail_carries_an_rsa_and_an_ed25519_signature(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    """The single inventory turns on the second, Ed25519 signature (RFC 8463)."""
    ed_selector = deployed["vars"].get("mail_dkim_ed25519_selector")
    assert ed_selector, "the single inventory sets mail_dkim_ed25519_selector"
    alice = person(deployed, "alice")
    subject = f"two signatures {token()}"
    assert_delivered(submit(alice, [OUTSIDE], subject))
    received = remote_mx.find(subject)
    assert received is not None, "not at the remote MX"
    assert dkim_signatures(received) == {
        "mail a=rsa-sha256": True,
        f"{ed_selector} a=ed25519-sha256": True,
    }


def _signatures_of_mail_out(deployed: dict[str, Any], remote_mx: RemoteMx) -> dict[str, bool]:
    subject = f"signed {token()}"
    assert_delivered(submit(person(deployed, "alice"), [OUTSIDE], subject))
    received = remote_mx.find(subject)
    assert received is not None, "not at the remote MX"
    return {k: v for k, v in dkim_signatures(received).items() if "rsa" in k}


def _dns_records() -> str:
    shown = subprocess.run(
        ["/opt/mailglue/venv/bin/mailglue", "dns"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.playbook
def test_a_dkim_key_rotation_publishes_the_new_key_before_signing_with_it(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    """The README's two runs: the next selector's key is made and printed while mail is still
    signed with the old one (receivers can verify both during the change), then signing
    switches to it."""
    nxt = f"next{token()[:6]}"
    keys = Path("/etc/opendkim/keys/example.org")
    try:
        run = run_playbook("--tags", "dkim,mailglue", "-e", f"mail_dkim_next_selector={nxt}")
        assert run.returncode == 0, run.stdout[-3000:]
        assert (keys / f"{nxt}.private").exists()
        records = _dns_records()
        assert f"{nxt}._domainkey.example.org." in records, records
        assert "mail._domainkey.example.org." in records, records
        assert _signatures_of_mail_out(deployed, remote_mx) == {"mail a=rsa-sha256": True}

        run = run_playbook("--tags", "dkim,mailglue", "-e", f"mail_dkim_selector={nxt}")
        assert run.returncode == 0, run.stdout[-3000:]
        assert _signatures_of_mail_out(deployed, remote_mx) == {f"{nxt} a=rsa-sha256": True}
        assert f"{nxt}._domainkey.example.org." in _dns_records()
    finally:
        run = run_playbook("--tags", "dkim,mailglue")
        for leftover in keys.glob(f"{nxt}.*"):
            leftover.unlink()
    assert run.returncode == 0, run.stdout[-3000:]
    assert _signatures_of_mail_out(deployed, remote_mx) == {"mail a=rsa-sha256": True}


def test_member_sends_to_a_colleague_and_the_outside(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    assert_delivered(submit(alice, [bob["mail"], OUTSIDE], f"both {mark}"))
    assert in_folder(bob, f"both {mark}") is not None
    received = remote_mx.find(mark)
    assert received is not None
    assert b"X-Rcpt-Args: <bob@example.org>" not in received  # bob's copy went to Cyrus only


def test_a_reply_comes_back(deployed: dict[str, Any]) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    assert_delivered(submit(alice, [bob["mail"]], f"question {mark}"))
    assert in_folder(bob, f"question {mark}") is not None
    assert_delivered(submit(bob, [alice["mail"]], f"Re: question {mark}"))
    assert in_folder(alice, f"Re: question {mark}") is not None


def test_authenticated_relay_on_port_25(deployed: dict[str, Any], remote_mx: RemoteMx) -> None:
    """The reference page: TLS on port 25 lets members authenticate and relay."""
    bob = person(deployed, "bob")
    mark = token()
    assert_delivered(submit(bob, [OUTSIDE], f"via 25 {mark}", port=25))
    assert remote_mx.find(mark) is not None


def test_plus_address_reaches_the_inbox(deployed: dict[str, Any]) -> None:
    bob = person(deployed, "bob")
    subject = f"newsletter {token()}"
    assert_delivered(from_outside("news@example.net", ["bob+news@example.org"], subject))
    assert in_folder(bob, subject) is not None


# --- large mail (the reference page's FAQ: "send or receive large emails?") -----------------


def test_a_large_attachment_within_the_limit_arrives_intact(deployed: dict[str, Any]) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    limit = size_limit()
    assert limit >= 10 * 1024 * 1024, f"EHLO SIZE {limit}: below the documented 25 MB default"
    subject = f"data set {token()}"
    data = os.urandom(limit * 7 // 10)
    raw = with_attachment(alice, bob["mail"], subject, data)
    assert limit * 9 // 10 < len(raw) < limit
    login = (alice["uid"], alice["password"])
    options = [f"SIZE={len(raw)}"]
    assert_delivered(
        send(SUBMISSION, alice["mail"], [bob["mail"]], raw, login=login, mail_options=options)
    )
    assert in_folder(bob, subject) is not None, "not in bob's INBOX"
    assert attachments_of(bob, subject) == [data], "the file bob got is not the file alice sent"


@pytest.mark.parametrize("declared", [True, False], ids=["size-declared", "size-not-declared"])
@pytest.mark.parametrize("outside", [False, True], ids=["member-on-587", "outside-on-25"])
def test_a_message_over_the_limit_is_refused_with_552_and_never_delivered(
    deployed: dict[str, Any], declared: bool, outside: bool
) -> None:
    """A client that declares the size (Thunderbird does) hears 552 at MAIL FROM; one that does
    not sends it all and hears 552 after DATA. Either way nothing reaches the mailbox: from a
    member on 587 as from another domain's server on 25 (which then tells its sender)."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    limit = size_limit()
    subject = f"too big {token()}"
    sender = "colleague@example.net" if outside else alice["mail"]
    raw = with_attachment({"mail": sender}, bob["mail"], subject, os.urandom(limit * 8 // 10))
    assert len(raw) > limit
    options = [f"SIZE={len(raw)}"] if declared else []
    if outside:
        tx = send(MX, sender, [bob["mail"]], raw, starttls=True, mail_options=options)
    else:
        login = (alice["uid"], alice["password"])
        tx = send(SUBMISSION, sender, [bob["mail"]], raw, login=login, mail_options=options)
    refusal = tx.mail if declared else tx.data
    assert refusal is not None and refusal.code == 552 and refusal.enhanced == "5.3.4", tx
    assert in_folder(bob, subject, timeout=5) is None, "delivered although refused"


# --- aliases ---------------------------------------------------------------------------------


def test_postmaster_reaches_its_member(deployed: dict[str, Any]) -> None:
    alice = person(deployed, "alice")
    subject = f"abuse report {token()}"
    assert_delivered(from_outside("abuse@example.net", ["postmaster@example.org"], subject))
    assert in_folder(alice, subject) is not None


def test_alias_with_local_and_outside_members(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    mark = token()
    assert_delivered(from_outside("client@example.net", ["team@example.org"], f"team {mark}"))
    assert in_folder(alice, f"team {mark}") is not None
    assert in_folder(bob, f"team {mark}") is not None
    received = remote_mx.find(mark)
    assert received is not None and f"X-Rcpt-Args: <{OUTSIDE}>".encode() in received


def test_alias_and_user_in_one_message(deployed: dict[str, Any]) -> None:
    """A user is delivered inside the session, the alias through Postfix's queue: both arrive."""
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    subject = f"mixed {token()}"
    assert_delivered(
        from_outside("client@example.net", ["postmaster@example.org", bob["mail"]], subject)
    )
    assert in_folder(alice, subject) is not None
    assert in_folder(bob, subject) is not None


# --- refused at RCPT, with one clear text ---------------------------------------------------------


def test_unknown_user_is_refused_with_one_prefix(deployed: dict[str, Any]) -> None:
    nobody = f"nobody-{token()}@example.org"
    tx = from_outside("someone@example.net", [nobody], "x")
    reply = tx.rcpt[nobody]
    assert (reply.code, reply.enhanced) == (550, "5.1.1"), reply
    assert reply.text.count("Recipient address rejected") == 1, reply
    assert tx.data is None  # nothing was sent


def test_never_logged_in_is_refused(never_logged_in: dict[str, str]) -> None:
    address = never_logged_in["mail"]
    tx = from_outside("someone@example.net", [address], "x")
    reply = tx.rcpt[address]
    assert reply.code == 550 and "never logged in" in reply.text, reply


# --- senders: forged, spoofed, null -------------------------------------------------------------


def test_member_cannot_send_as_a_colleague(deployed: dict[str, Any]) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    subject = f"forged {token()}"
    tx = submit(bob, [alice["mail"]], subject, sender=alice["mail"])
    reply = tx.rcpt[alice["mail"]]
    assert (reply.code, reply.enhanced) == (553, "5.7.1"), reply
    assert "Sender address rejected" in reply.text and "not owned by user bob" in reply.text
    assert in_folder(alice, subject, timeout=3) is None


def test_member_may_send_as_an_alias_of_theirs(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice = person(deployed, "alice")
    mark = token()
    assert_delivered(
        submit(alice, [OUTSIDE], f"from postmaster {mark}", sender="postmaster@example.org")
    )
    received = remote_mx.find(mark)
    assert received is not None and b"X-Mail-Args: <postmaster@example.org>" in received


def test_null_sender_after_login_is_refused(deployed: dict[str, Any]) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    tx = submit(alice, [bob["mail"]], "bounce?", sender="")
    reply = tx.rcpt[bob["mail"]]
    assert (reply.code, reply.enhanced) == (553, "5.7.1"), reply
    assert "null sender" in reply.text


def test_outsider_cannot_use_our_domain_on_25(deployed: dict[str, Any]) -> None:
    bob = person(deployed, "bob")
    subject = f"ceo fraud {token()}"
    tx = from_outside("ceo@example.org", [bob["mail"]], subject)
    reply = tx.rcpt[bob["mail"]]
    assert (reply.code, reply.enhanced) == (553, "5.7.1"), reply
    assert "log in" in reply.text
    assert in_folder(bob, subject, timeout=3) is None


def test_relay_without_login_is_refused(deployed: dict[str, Any], remote_mx: RemoteMx) -> None:
    mark = token()
    tx = from_outside("spammer@example.net", [OUTSIDE], f"relay {mark}")
    assert tx.rcpt[OUTSIDE].code == 554 and "Relay access denied" in tx.rcpt[OUTSIDE].text
    assert remote_mx.find(mark, timeout=3) is None


# --- outgoing mail is scanned too ---------------------------------------------------------------


def test_outbound_virus_is_refused_and_not_sent(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice = person(deployed, "alice")
    mark = token()
    tx = submit(alice, [OUTSIDE], f"invoice {mark}", f"{EICAR}\n")
    assert tx.data is not None and tx.data.code == 554, tx
    assert tx.data.text.startswith("5.7.1 Not sent: virus found"), tx.data
    assert remote_mx.find(mark, timeout=5) is None


def test_outbound_spam_is_refused_with_the_reason(
    deployed: dict[str, Any], remote_mx: RemoteMx
) -> None:
    alice = person(deployed, "alice")
    mark = token()
    tx = submit(alice, [OUTSIDE], f"offer {mark}", f"{smoke.GTUBE}\n")
    assert tx.data is not None and tx.data.code == 550, tx
    assert re.search(r"Not sent: our spam filter scored your message 99\d", tx.data.text), tx
    assert "mostly for GTUBE" in tx.data.text
    assert remote_mx.find(mark, timeout=5) is None


def test_the_event_log_marks_the_direction(deployed: dict[str, Any], remote_mx: RemoteMx) -> None:
    alice = person(deployed, "alice")
    mark = token()
    assert_delivered(submit(alice, [OUTSIDE], f"direction {mark}"))
    assert_delivered(from_outside("x@example.net", [alice["mail"]], f"direction in {mark}"))
    events = milter_events(mark)
    directions = {e["direction"] for e in events}
    assert directions == {"inbound", "outbound"}, events


def milter_events(mark: str) -> list[dict[str, Any]]:
    """The milter's transaction events of the messages whose Message-ID carries `mark`."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = Path("/var/log/mailglue/milter.log").read_text(encoding="utf-8", errors="replace")
        events = [
            e
            for e in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
            if e.get("event") == "transaction" and mark in str(e.get("message_id"))
        ]
        if len(events) >= 2:
            break
        time.sleep(0.5)
    return events


# --- SMTP smuggling ------------------------------------------------------------------------------

SMUGGLING_ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r"]


def _smuggle(port: int, ending: bytes, mark: str, login: tuple[str, str] | None) -> bytes:
    """One raw session: a message whose body ends with a non-standard end-of-data followed by
    a second, smuggled transaction, then the real end. Returns everything the server said.

    The smuggled sender is one the server would otherwise accept (an outside domain on 25, the
    logged-in member's own address on 587), so only the end-of-data handling can stop it."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock: socket.socket | ssl.SSLSocket = raw
    said = b""

    def command(line: bytes) -> bytes:
        nonlocal said
        sock.sendall(line + b"\r\n")
        reply = b""
        while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", reply):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        said += reply
        return reply

    said += sock.recv(4096)  # banner
    command(b"EHLO smuggler.test")
    command(b"STARTTLS")
    sock = tls_context().wrap_socket(raw)
    command(b"EHLO smuggler.test")
    sender, smuggled, victim = b"outer@example.net", b"boss@partner.example", b"bob@example.org"
    if login is not None:
        command(b"AUTH PLAIN " + base64.b64encode(f"\0{login[0]}\0{login[1]}".encode()))
        sender = smuggled = f"{login[0]}@example.org".encode()
    command(b"MAIL FROM:<" + sender + b">")
    command(b"RCPT TO:<" + victim + b">")
    if not command(b"DATA").startswith(b"354"):
        return said
    payload = (
        f"From: <{sender.decode()}>\r\nSubject: outer {mark}\r\n\r\nhello\r\n".encode()
        + ending
        + b"MAIL FROM:<"
        + smuggled
        + b">\r\nRCPT TO:<"
        + victim
        + b">\r\nDATA\r\n"
        + f"Subject: smuggled {mark}\r\n\r\nwire the money\r\n".encode()
    )
    said += command(payload + b"\r\n.")
    with contextlib.suppress(OSError):
        said += command(b"QUIT")
    sock.close()
    return said


@pytest.mark.parametrize("port", [25, 587])
@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS, ids=lambda e: e.hex())
def test_smuggled_message_is_never_delivered(
    deployed: dict[str, Any], port: int, ending: bytes
) -> None:
    bob = person(deployed, "bob")
    login = (bob["uid"], bob["password"]) if port == 587 else None
    mark = token()
    said = _smuggle(port, ending, mark, login)
    # Every attempt ends in a definite reply: the outer message accepted whole, or refused.
    assert re.search(rb"\r\n(250|5\d\d) ", said), said
    outer = in_folder(bob, f"outer {mark}", timeout=10)
    assert in_folder(bob, f"smuggled {mark}", timeout=2) is None, said
    if outer is None:
        assert re.search(rb"\r\n5\d\d ", said), said  # refused, not lost silently


# --- folders a mail client finds ------------------------------------------------------------------


def test_special_use_folders_exist_for_a_new_mailbox(deployed: dict[str, Any]) -> None:
    alice = person(deployed, "alice")
    with smoke.imap_login(alice["uid"], alice["password"]) as imap:
        status, lines = imap.list()
    assert status == "OK"
    found = {}
    for line in lines:
        text = line.decode() if isinstance(line, bytes) else str(line)
        match = re.match(r"\(([^)]*)\) \"[./]\" \"?([^\"]+)\"?", text)
        if match:
            found[match.group(2)] = match.group(1).lower()
    for folder, flag in [
        ("Sent", "\\sent"),
        ("Drafts", "\\drafts"),
        ("Trash", "\\trash"),
        ("Junk", "\\junk"),
    ]:
        assert flag in found.get(f"INBOX.{folder}", ""), found


# --- password guessing ----------------------------------------------------------------------------
# Each guesser comes from its own loopback address: Postfix's anvil and fail2ban see another
# client than the members' (127.0.0.1, which also stands for webmail and is never banned).


def _smtp_auth_attempt(source: str, token: str) -> int | None:
    """One AUTH on 587 from `source`; the reply code, or None when the connection is refused
    (banned)."""
    try:
        with smtplib.SMTP(*SUBMISSION, timeout=30, source_address=(source, 0)) as smtp:
            smtp.ehlo("guesser.test")
            smtp.starttls(context=tls_context())
            smtp.ehlo("guesser.test")
            return smtp.docmd("AUTH", f"PLAIN {token}")[0]
    except (OSError, smtplib.SMTPServerDisconnected):
        return None


def _imap_login_attempt(source: str, user: str, password: str) -> bytes | None:
    """One IMAPS LOGIN from `source`; the tagged reply, or None when refused (banned)."""
    try:
        with (
            socket.create_connection(
                ("127.0.0.1", 993), timeout=30, source_address=(source, 0)
            ) as raw,
            tls_context().wrap_socket(raw) as tls,
        ):
            tls.recv(4096)  # greeting
            tls.sendall(f'a1 LOGIN "{user}" "{password}"\r\n'.encode())
            reply = b""
            while b"a1 " not in reply:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return None


def fail2ban(*args: str) -> str:
    return subprocess.run(
        ["fail2ban-client", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(1)


def test_smtp_password_guessing_is_stopped_and_others_unaffected(deployed: dict[str, Any]) -> None:
    alice, bob = person(deployed, "alice"), person(deployed, "bob")
    wrong = base64.b64encode(f"\0{alice['uid']}\0guess".encode()).decode()
    guesser = "127.0.0.77"
    codes: list[int | None] = []
    try:
        for _ in range(15):
            codes.append(_smtp_auth_attempt(guesser, wrong))
            if codes[-1] in (450, None):  # anvil's throttle, or fail2ban's ban
                break
        assert codes[-1] in (450, None), codes
        assert all(c == 535 for c in codes[:-1]), codes  # wrong password until stopped
        # a member elsewhere still logs in and sends
        subject = f"still works {token()}"
        tx = send(
            SUBMISSION,
            bob["mail"],
            [alice["mail"]],
            message(bob["mail"], [alice["mail"]], subject),
            login=(bob["uid"], bob["password"]),
            source="127.0.0.78",
        )
        assert_delivered(tx)
        assert in_folder(alice, subject) is not None
    finally:
        subprocess.run(["fail2ban-client", "set", "postfix-sasl", "unbanip", guesser], check=False)


@pytest.mark.parametrize("rotated", [False, True], ids=["as-deployed", "after-log-rotation"])
def test_imap_password_guessing_is_banned_and_the_ban_lifts_itself(
    deployed: dict[str, Any], rotated: bool
) -> None:
    """Also after the weekly rotation of mail.log, which fail2ban reads where supervisor runs
    rsyslogd: rsyslogd must then write to the new file, not on into the rotated one."""
    alice = person(deployed, "alice")
    guesser = "127.0.0.79"
    if rotated:
        subprocess.run(["logrotate", "-f", "/etc/logrotate.d/rsyslog"], check=True, timeout=60)
    bantime = fail2ban("get", "cyrus-imap", "bantime")
    fail2ban(
        "set", "cyrus-imap", "bantime", "15"
    )  # the admin's setting is minutes; a test waits less
    try:
        attempts = 0
        while _imap_login_attempt(guesser, alice["uid"], "guess") is not None:
            attempts += 1
            assert attempts <= 12, "never banned"
        assert guesser in fail2ban("status", "cyrus-imap")
        # the member logs in as usual meanwhile
        with smoke.imap_login(alice["uid"], alice["password"]):
            pass
        # and the ban ends by itself
        _wait(
            lambda: _imap_login_attempt(guesser, alice["uid"], "guess") is not None,
            60,
            "still banned",
        )
    finally:
        fail2ban("set", "cyrus-imap", "bantime", bantime)
        subprocess.run(["fail2ban-client", "set", "cyrus-imap", "unbanip", guesser], check=False)


def test_sieve_password_guessing_is_banned(deployed: dict[str, Any]) -> None:
    alice = person(deployed, "alice")
    guesser = "127.0.0.80"

    def attempt() -> bool:
        """True when the server answered (wrong password), False when the client is banned."""
        try:
            with ManageSieve(source=guesser) as sieve:
                sieve.login(alice["uid"], "guess")
        except SieveError:
            return True
        except OSError:
            return False
        raise AssertionError("a wrong password was accepted")

    try:
        attempts = 0
        while attempt():
            attempts += 1
            assert attempts <= 12, "never banned"
        assert guesser in fail2ban("status", "sieve")
        with ManageSieve() as sieve:
            sieve.login(alice["uid"], alice["password"])
    finally:
        subprocess.run(["fail2ban-client", "set", "sieve", "unbanip", guesser], check=False)


# --- filters over ManageSieve: fileinto, redirect, vacation -----------------------------------

FILTER = """require ["fileinto", "mailbox", "copy", "vacation"];
if header :contains "Subject" "project-x" {{
    fileinto :create "INBOX.Projects";
    stop;
}}
if header :contains "Subject" "forward-me" {{
    redirect :copy "{outside}";
}}
vacation :days 1 :subject "Away {mark}" :addresses ["{me}"] "I am away until Monday.";
"""


@pytest.fixture
def bob_filter(deployed: dict[str, Any]) -> Iterator[str]:
    """Bob's own script, uploaded and activated as a filter editor would; his previous active
    script is restored afterwards."""
    bob = person(deployed, "bob")
    mark = token()
    with ManageSieve() as sieve:
        sieve.login(bob["uid"], bob["password"])
        before = [s for s in sieve.scripts_with_state() if s[1]]
        sieve.put("journey", FILTER.format(outside=OUTSIDE, mark=mark, me=bob["mail"]))
        sieve.activate("journey")
    try:
        yield mark
    finally:
        with ManageSieve() as sieve:
            sieve.login(bob["uid"], bob["password"])
            sieve.activate(before[0][0] if before else "")
            sieve.delete("journey")


def test_filter_files_into_a_folder(deployed: dict[str, Any], bob_filter: str) -> None:
    bob = person(deployed, "bob")
    subject = f"project-x status {token()}"
    assert_delivered(from_outside("colleague@example.net", [bob["mail"]], subject))
    assert in_folder(bob, subject, folder="INBOX.Projects") is not None
    assert in_folder(bob, subject, timeout=2) is None  # not in INBOX


def test_filter_forwards_to_the_outside(
    deployed: dict[str, Any], bob_filter: str, remote_mx: RemoteMx
) -> None:
    bob = person(deployed, "bob")
    mark = token()
    subject = f"forward-me please {mark}"
    assert_delivered(from_outside("boss@example.net", [bob["mail"]], subject))
    assert in_folder(bob, subject) is not None  # :copy keeps one
    forwarded = remote_mx.find(f"forward-me please {mark}")
    assert forwarded is not None and f"X-Rcpt-Args: <{OUTSIDE}>".encode() in forwarded
    # an outsider's From: has no key of ours: signed as the forwarder, with our domain's key
    assert dkim_verifies(forwarded), forwarded[:2000]


def test_a_filter_forwards_mail_as_large_as_any_mail_may_be(
    deployed: dict[str, Any], bob_filter: str, remote_mx: RemoteMx
) -> None:
    """The forwarded copy goes out through Postfix again (Cyrus hands it to sendmail), with one
    more Received line than the mail that reached the mailbox: the largest mail we accept
    must still be forwarded, not refused as too big with the member none the wiser."""
    bob = person(deployed, "bob")
    mark = token()
    subject = f"forward-me the dataset {mark}"
    raw, data = just_under_the_size_limit("boss@example.net", bob["mail"], subject)
    assert_delivered(from_outside("boss@example.net", [bob["mail"]], subject, raw=raw))
    assert in_folder(bob, mark) is not None
    deadline = time.monotonic() + 60
    while (forwarded := remote_mx.find(mark)) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert forwarded is not None, "the forwarded copy never reached the outside address"
    assert b"X-Mail-Args: <boss@example.net>" in forwarded, forwarded[:1500]  # not a bounce
    assert base64.b64encode(data)[:4096] in re.sub(rb"\s", b"", forwarded)


def test_vacation_answers_once_per_sender(
    deployed: dict[str, Any], bob_filter: str, remote_mx: RemoteMx
) -> None:
    bob = person(deployed, "bob")
    stranger = f"stranger-{token()}@example.net"
    for n in (1, 2):
        assert_delivered(from_outside(stranger, [bob["mail"]], f"hello {n} {token()}"))
    reply = remote_mx.find(f"Away {bob_filter}")
    assert reply is not None and f"X-Rcpt-Args: <{stranger}>".encode() in reply
    assert dkim_verifies(reply), reply[:2000]  # this host's own mail is signed too
    spammer = f"offers-{token()}@example.net"  # tagged spam is never answered
    assert_delivered(tagged_from_outside(spammer, [bob["mail"]], f"offer {token()}"))
    time.sleep(3)  # a second reply, if any, would have arrived by now
    replies = remote_mx.all_containing(stranger)
    assert len(replies) == 1, replies
    assert remote_mx.all_containing(spammer) == []


def test_tagged_spam_is_filed_in_junk(deployed: dict[str, Any]) -> None:
    alice = person(deployed, "alice")  # her script is the one every new member gets
    subject = f"special offer {token()}"
    assert_delivered(tagged_from_outside("offers@example.net", [alice["mail"]], subject))
    copy = in_folder(alice, subject, folder="INBOX.Junk")
    assert copy is not None, "not in Junk"
    assert b"X-Spam-Flag: YES" in copy and b"Precedence: junk" in copy
    assert in_folder(alice, subject, timeout=2) is None  # not in INBOX


# --- quota ---------------------------------------------------------------------------------


def set_quota_in_ldap(uid: str, kib: int | None) -> None:
    """What an admin does: change the member's mailQuotaKiB in LDAP (here as root on ldapi)."""
    change = (
        f"replace: mailQuotaKiB\nmailQuotaKiB: {kib}\n"
        if kib is not None
        else "delete: mailQuotaKiB\n"
    )
    ldif = f"dn: {member_dn(uid)}\nchangetype: modify\n{change}-\n"
    done = ldap_as_root("ldapmodify", ldif)
    assert done.returncode in (0, 16), done.stderr  # 16: there was nothing to delete


def run_quota_pass() -> str:
    """One pass of the service mailglue-quota runs every few minutes."""
    return run_service_pass("quota", timeout=60)


def storage(admin: imaplib.IMAP4_SSL, mailbox: str) -> tuple[int, int] | None:
    """(usage, limit) in KiB of the mailbox's own quota root, None without one."""
    status, data = admin.getquotaroot(mailbox)
    assert status == "OK", data
    for line in data[1]:
        match = re.match(
            rb'"?' + re.escape(mailbox.encode()) + rb'"? \(STORAGE (\d+) (\d+)', line or b""
        )
        if match:
            return int(match[1]), int(match[2])
    return None


@pytest.fixture
def alice_quota_reset(deployed: dict[str, Any]) -> Iterator[None]:
    yield
    set_quota_in_ldap("alice", None)
    run_quota_pass()


def test_quota_set_in_ldap_reaches_cyrus_and_refuses_mail_over_it(
    deployed: dict[str, Any], admin: imaplib.IMAP4_SSL, alice_quota_reset: None
) -> None:
    alice = person(deployed, "alice")
    bob = next(u for u in deployed["vars"]["ldap_users"] if u["uid"] == "bob")
    run_quota_pass()
    bob_limit = storage(admin, "user.bob")  # his quota_kib in the inventory, through LDAP
    assert bob_limit is not None and bob_limit[1] == bob["quota_kib"], bob_limit
    set_quota_in_ldap("alice", 1)  # KiB: her mailbox is already over it
    assert "1 changed" in run_quota_pass()
    limit = storage(admin, "user.alice")
    assert limit is not None and limit[1] == 1, limit
    log = Path("/var/log/mailglue/quota.log").read_text(encoding="utf-8").splitlines()
    event = json.loads(log[-2])  # the change, then the summary
    assert event["event"] == "quota_set" and event["user"] == "alice" and event["to_kib"] == 1

    subject = f"over quota {token()}"
    tx = from_outside("sender@example.net", [alice["mail"]], subject)
    refused = tx.rcpt[alice["mail"]] if tx.data is None else tx.data
    # 452 at RCPT, or 451 at DATA while the policy's "mailbox exists" answer is cached
    assert refused.code in (451, 452) and refused.enhanced == "4.2.2", tx
    assert in_folder(alice, subject, timeout=3) is None

    set_quota_in_ldap("alice", None)  # back to the default: no limit
    assert "1 changed" in run_quota_pass()
    assert storage(admin, "user.alice") is None
    assert_delivered(from_outside("sender@example.net", [alice["mail"]], subject))  # the retry
    assert in_folder(alice, subject) is not None


def test_a_member_near_the_quota_is_warned_when_opening_the_mailbox(
    admin: imaplib.IMAP4_SSL, newcomer: dict[str, str]
) -> None:
    body = "a line of an ordinary report, long enough to fill a mailbox\n" * 1000  # ~60 KiB
    for n in range(3):
        tx = from_outside("sender@example.net", [newcomer["mail"]], f"x{n} {token()}", body)
        assert_delivered(tx)
    set_quota_in_ldap(newcomer["uid"], 10**9)  # a limit first: Cyrus then counts the usage
    run_quota_pass()
    usage = storage(admin, f"user.{newcomer['uid']}")
    assert usage is not None and usage[0] > 0, usage
    set_quota_in_ldap(newcomer["uid"], usage[0] * 100 // 95 + 1)  # ~95 %: over quotawarn (90)
    run_quota_pass()
    with smoke.imap_login(newcomer["uid"], newcomer["password"]) as imap:
        imap.select("INBOX")
        alerts = imap.untagged_responses.get("NO", [])
    assert any(b"[ALERT]" in line and b"quota" in line.lower() for line in alerts), alerts


# --- teaching the spam filter -------------------------------------------------------------------


def test_a_new_member_teaches_the_filter_from_webmail(
    deployed: dict[str, Any], newcomer: dict[str, str], browser: WebDriver
) -> None:
    """The FAQ's "how does the filter learn?" from a member's side: a wrongly tagged message
    sits in Junk; in webmail they see LearnSpam among their folders (clients show only the
    folders one is subscribed to), move the message there, and the next learning pass
    teaches it to spamd as ham."""
    junk = deployed["vars"].get("cyrus_junk_folder", "INBOX.Junk")
    learnspam = deployed["vars"].get("cyrus_learnspam_folder", "LearnSpam")
    subject = f"the newsletter I asked for {token()}"
    assert_delivered(tagged_from_outside("news@example.net", [newcomer["mail"]], subject))
    assert in_folder(newcomer, subject, folder=junk) is not None, "not in Junk"

    logged_in(browser, newcomer["uid"], newcomer["password"])
    folders = wait(browser, ec.presence_of_element_located((By.ID, "mailboxlist")))
    wait(browser, lambda _: learnspam in folders.text.split("\n"))
    with smoke.imap_login(newcomer["uid"], newcomer["password"]) as imap:
        imap.select(junk, readonly=True)
        _, found = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
    open_page(browser, f"{BASE}/?_task=mail&_action=show&_uid={found[0].decode()}&_mbox={junk}")
    wait(browser, ec.element_to_be_clickable((By.ID, "messagemenulink"))).click()
    wait(browser, ec.element_to_be_clickable((By.CSS_SELECTOR, "#message-menu a.move"))).click()
    wait(
        browser,
        ec.element_to_be_clickable(
            (By.XPATH, f"//*[@id='folder-selector']//a[span[text()='{learnspam}']]")
        ),
    ).click()
    wait(browser, lambda _: in_folder(newcomer, subject, folder=junk, timeout=0) is None)
    assert shown_error(browser) is None, shown_error(browser)

    learned = run_service_pass("learn")
    assert re.search(r"\b1 ham\b", learned), learned


def test_an_older_account_subscribes_to_learnspam_in_webmail_settings(
    deployed: dict[str, Any], newcomer: dict[str, str], browser: WebDriver
) -> None:
    """A mailbox made before LearnSpam was subscribed at first login does not show it; the
    README tells its member to switch it on under Settings → Folders."""
    learnspam = deployed["vars"].get("cyrus_learnspam_folder", "LearnSpam")
    with smoke.imap_login(newcomer["uid"], newcomer["password"]) as imap:
        assert imap.unsubscribe(learnspam)[0] == "OK"  # as an account from before the change

    logged_in(browser, newcomer["uid"], newcomer["password"])
    open_page(browser, f"{BASE}/?_task=settings&_action=folders")
    switch = f"//input[@name='_subscribed[]'][@value='{learnspam}']/following-sibling::label"
    wait(browser, ec.element_to_be_clickable((By.XPATH, switch))).click()

    def subscribed() -> bool:
        with smoke.imap_login(newcomer["uid"], newcomer["password"]) as imap:
            _, listed = imap.lsub()
        return any(line.split()[-1].strip(b'"') == learnspam.encode() for line in listed if line)

    wait(browser, lambda _: subscribed())
    open_page(browser, f"{BASE}/?_task=mail")
    folders = wait(browser, ec.presence_of_element_located((By.ID, "mailboxlist")))
    assert learnspam in folders.text.split("\n"), folders.text
