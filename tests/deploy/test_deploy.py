"""Deployment test: the playbook applied to this machine, then black-box checks over the
standard ports (25, 587, 993), as DESIGN.md's fourth testing layer describes.

It installs daemons system-wide and runs them on the standard ports, so it only runs as root
on Debian; set MAILGLUE_SKIP_DEPLOY=1 to skip it, MAILGLUE_DEPLOY_REUSE=1 to run only the
black-box checks against what is already deployed. One fixture (conftest.py) deploys for the
whole package (twice, plus a --check --diff run); every test below then talks to the stack.
"""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap
import pytest

from tests.deploy.stack import (
    ANSIBLE_DIR,
    DEPLOY_MARKS,
    EICAR,
    ldap_as_root,
    member_dn,
    run_playbook,
    run_service_pass,
    smoke,
    user,
)
from tests.harness.process import free_port
from tests.harness.smtp import tls_context

pytestmark = DEPLOY_MARKS


def test_clean_mail_is_delivered_and_read_over_imaps(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    subject = f"deploy clean {uuid.uuid4().hex}"
    code, text = smoke.send(smoke.message("sender@example.net", alice["mail"], subject, "hello\n"))
    assert code == 250, text
    headers = smoke.find_subject(alice["uid"], alice["password"], subject, timeout=60)
    assert headers is not None, "clean mail not in INBOX"
    assert b"X-Spam-Status: No" in headers


def test_gtube_is_rejected_with_550(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    msg = smoke.message("sender@example.net", alice["mail"], "deploy gtube", smoke.GTUBE + "\n")
    code, text = smoke.send(msg)
    assert code == 550, text


def test_eicar_is_rejected_with_554(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    msg = smoke.message("sender@example.net", alice["mail"], "deploy eicar", EICAR + "\n")
    code, text = smoke.send(msg)
    assert code == 554, text
    assert "virus" in text.lower()


def _virus_from_outside(deployed: dict[str, Any]) -> None:
    msg = smoke.message("sender@example.net", user(deployed, 0)["mail"], "rotated", EICAR + "\n")
    assert smoke.send(msg)[0] == 554


def _web_page(deployed: dict[str, Any]) -> None:
    urllib.request.urlopen("https://localhost/", context=tls_context(), timeout=30).read()


def _imap_login(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    with smoke.imap_login(alice["uid"], alice["password"]):
        pass


@pytest.mark.parametrize(
    "rotation, log, activity",
    [
        ("clamav-daemon", "/var/log/clamav/clamav.log", _virus_from_outside),
        ("nginx", "/var/log/nginx/access.log", _web_page),
        ("rsyslog", "/var/log/mail.log", _imap_login),
    ],
    ids=["clamd", "nginx", "rsyslog"],
)
def test_a_daemon_writes_to_its_new_log_after_rotation(
    deployed: dict[str, Any], rotation: str, log: str, activity: Callable[[dict[str, Any]], None]
) -> None:
    """cron rotates the logs (logrotate): each daemon must then write into the new file, not
    on into the rotated one, where an admin (and fail2ban) would no longer look."""
    rules = Path("/etc/logrotate.d") / rotation
    if not rules.exists():
        pytest.skip(f"{rules} is not deployed here")
    subprocess.run(["logrotate", "-f", str(rules)], check=True, timeout=60)
    time.sleep(1)  # the daemon's signal
    activity(deployed)
    deadline = time.monotonic() + 20
    while Path(log).stat().st_size == 0:
        assert time.monotonic() < deadline, f"nothing written to {log} after its rotation"
        time.sleep(0.5)


def test_unknown_recipient_is_refused_at_rcpt(deployed: dict[str, Any]) -> None:
    with smtplib.SMTP("127.0.0.1", 25, local_hostname="deploy.test", timeout=60) as smtp:
        smtp.ehlo()
        assert smtp.mail("sender@example.net")[0] == 250
        code, text = smtp.rcpt(f"nobody-{uuid.uuid4().hex[:8]}@{deployed['vars']['mail_domain']}")
    assert code == 550, text


def scanned_and_checked(deployed: dict[str, Any]) -> dict[str, object]:
    """What port 25 shows of the milter and the policy service: a stranger refused at RCPT
    (policy), and clean mail in alice's INBOX with the milter's X-Spam-Status."""
    alice = user(deployed, 0)
    with smtplib.SMTP("127.0.0.1", 25, local_hostname="deploy.test", timeout=60) as smtp:
        smtp.ehlo()
        smtp.mail("sender@example.net")
        stranger = smtp.rcpt(f"nobody-{uuid.uuid4().hex[:8]}@{deployed['vars']['mail_domain']}")
    subject = f"deploy moved {uuid.uuid4().hex}"
    code, reply = smoke.send(smoke.message("sender@example.net", alice["mail"], subject, "hi\n"))
    headers = smoke.find_subject(alice["uid"], alice["password"], subject, timeout=60)
    return {
        "stranger at RCPT": stranger[0],
        "clean mail": code,
        "scanned in INBOX": headers is not None and b"X-Spam-Status: No" in headers,
        "reply": reply,
    }


@pytest.mark.playbook
def test_moving_the_milter_and_the_policy_service_keeps_mail_flowing(
    deployed: dict[str, Any],
) -> None:
    """An admin gives the milter and the policy service new addresses and runs the playbook:
    both must be there when Postfix looks for them (a reload would keep the old sockets, and
    every message would wait on 451s)."""
    expected = {"stranger at RCPT": 550, "clean mail": 250, "scanned in INBOX": True}
    moved = {
        "mail_milter_listen": f"inet:127.0.0.1:{free_port()}",
        "mail_policy_listen": f"inet:127.0.0.1:{free_port()}",
    }
    try:
        run = run_playbook("--tags", "mailglue,postfix", "-e", json.dumps(moved))
        assert run.returncode == 0, run.stdout[-3000:]
        shown = scanned_and_checked(deployed)
        assert {key: shown[key] for key in expected} == expected, (moved, shown)
    finally:
        back = run_playbook("--tags", "mailglue,postfix")  # the inventory's own addresses
        assert back.returncode == 0, back.stdout[-3000:]
    shown = scanned_and_checked(deployed)
    assert {key: shown[key] for key in expected} == expected, shown


def test_relay_to_an_outside_domain_is_refused(deployed: dict[str, Any]) -> None:
    with smtplib.SMTP("127.0.0.1", 25, local_hostname="deploy.test", timeout=60) as smtp:
        smtp.ehlo()
        assert smtp.mail("sender@example.net")[0] == 250
        code, text = smtp.rcpt("someone@example.com")
    assert code in (550, 554), text
    assert b"Relay access denied" in text


def test_submission_refuses_auth_without_tls(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    token = base64.b64encode(f"\0{alice['uid']}\0{alice['password']}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", 587, local_hostname="deploy.test", timeout=60) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth"), "AUTH offered before STARTTLS"
        code, text = smtp.docmd("AUTH", f"PLAIN {token}")
    assert code in (503, 530, 538), text


def test_managesieve_offers_and_takes_no_password_before_starttls(deployed: dict[str, Any]) -> None:
    """A filter editor set to "no encryption" must fail to log in rather than send the
    password in clear and succeed (port 4190)."""
    alice = user(deployed, 0)
    with socket.create_connection(("127.0.0.1", 4190), timeout=10) as plain:
        reader = plain.makefile("rb")
        greeting = []
        while not (line := reader.readline()).startswith((b"OK", b"NO", b"BYE")):
            greeting.append(line)
        assert b'"STARTTLS"\r\n' in greeting, greeting
        assert b'"SASL" ""\r\n' in greeting, greeting  # no mechanism offered in clear
        token = base64.b64encode(f"\0{alice['uid']}\0{alice['password']}".encode()).decode()
        plain.sendall(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
        assert reader.readline().startswith(b"NO"), "a login in clear was accepted"


def test_submission_accepts_auth_with_tls(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    with smtplib.SMTP("127.0.0.1", 587, local_hostname="deploy.test", timeout=60) as smtp:
        smtp.ehlo()
        smtp.starttls(context=smoke.tls_context())
        smtp.ehlo()
        code, text = smtp.login(alice["uid"], alice["password"])
    assert code == 235, text


def test_submission_refuses_a_wrong_password(deployed: dict[str, Any]) -> None:
    alice = user(deployed, 0)
    with smtplib.SMTP("127.0.0.1", 587, local_hostname="deploy.test", timeout=60) as smtp:
        smtp.ehlo()
        smtp.starttls(context=smoke.tls_context())
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(alice["uid"], "not-the-password")


@pytest.mark.playbook
def test_the_playbook_refuses_a_member_whose_address_is_not_their_login(
    deployed: dict[str, Any],
) -> None:
    """Mail for jane.doe@ would be accepted at RCPT and refused by Cyrus at DATA, since her
    mailbox is named jdoe: the playbook says so before changing anything."""
    users = [*deployed["vars"]["ldap_users"], {**user(deployed, 0), "uid": "jdoe"}]
    users[-1]["mail"] = "jane.doe@example.org"
    run = run_playbook("--check", "--tags", "ldap", "-e", json.dumps({"ldap_users": users}))
    assert run.returncode != 0
    assert "uid jdoe: mail jane.doe@example.org must be jdoe@ a mail domain" in run.stdout, (
        run.stdout[-3000:]
    )
    assert "ldap_aliases" in run.stdout


@pytest.mark.playbook
def test_the_playbook_refuses_webmail_that_would_send_passwords_in_clear(
    deployed: dict[str, Any],
) -> None:
    """Roundcube binds as the member with their password to change it: pointed at another
    host's plain ldap://, the playbook stops before anything is written, naming the variable."""
    extra = {"webmail_ldap_uri": "ldap://ldap1.example.org/"}
    run = run_playbook("--check", "--tags", "webmail", "-e", json.dumps(extra))
    assert run.returncode != 0
    said = "webmail_ldap_uri ldap://ldap1.example.org/: Roundcube would send members' passwords"
    assert said in run.stdout, run.stdout[-3000:]


@pytest.mark.playbook
def test_the_playbook_refuses_webmail_on_a_host_without_imap(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    """Webmail reads IMAP on its own host: on an mx host that is no mailstore, members could
    not log in, so the playbook says so instead of deploying it."""
    (tmp_path / "hosts.yml").write_text(
        "all:\n"
        "  hosts:\n"
        "    localhost: {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}\n"
        "  children:\n"
        "    mx: {hosts: {localhost: null}}\n"
    )
    (tmp_path / "group_vars").symlink_to(ANSIBLE_DIR / "inventories/single/group_vars")
    run = run_playbook("--check", "--tags", "webmail", inventory=str(tmp_path))
    assert run.returncode != 0
    said = "webmail_imap_host ssl://127.0.0.1:993 is on this host, but localhost is not in"
    assert said in run.stdout, run.stdout[-3000:]
    assert "the mailstore group" in run.stdout, run.stdout[-3000:]


DIRECTORY = {"objectClass", "uid", "cn", "sn", "givenName", "displayName", "mail"}


def test_a_member_sees_colleagues_names_and_addresses_in_ldap_and_nothing_more(
    deployed: dict[str, Any],
) -> None:
    """All webmail's address book can show a member of a colleague: name and address, not
    their quota, mail store or password hash; and without a login, nobody at all."""
    alice, bob = user(deployed, 0), user(deployed, 1)
    held = ldap_as_root("ldapsearch", "", "-LLL", "-b", member_dn(bob["uid"]), "-s", "base")
    assert "mailQuotaKiB:" in held.stdout and "userPassword:" in held.stdout, held.stdout
    people = member_dn(bob["uid"]).split(",", 1)[1]

    member = ldap.initialize("ldap://127.0.0.1/")
    member.simple_bind_s(member_dn(alice["uid"]), alice["password"])
    ((dn, shown),) = member.search_s(people, ldap.SCOPE_ONELEVEL, f"(uid={bob['uid']})")
    assert dn == member_dn(bob["uid"]) and shown["mail"] == [bob["mail"].encode()], shown
    assert set(shown) <= DIRECTORY, set(shown) - DIRECTORY

    with pytest.raises(ldap.NO_SUCH_OBJECT):
        ldap.initialize("ldap://127.0.0.1/").search_s(people, ldap.SCOPE_ONELEVEL, "(uid=*)")


def test_debians_periodic_jobs_run(deployed: dict[str, Any]) -> None:
    """Log rotation (cron.daily), Mailman's digests, HyperKitty's search index and Roundcube's
    clean-up are Debian's cron jobs: the host must run cron, also where supervisor (not
    systemd) runs the daemons. HyperKitty's minutely job is the one seen within a test."""
    if not deployed["vars"].get("mail_lists_enabled"):
        pytest.skip("no mailing lists deployed: no minutely job to see")
    syslog = Path("/var/log/syslog")
    seen = syslog.stat().st_size
    deadline = time.monotonic() + 75
    ran = False
    while not ran and time.monotonic() < deadline:
        time.sleep(2)
        with syslog.open("rb") as log:
            log.seek(seen)
            ran = any(b"CRON[" in line and b"runjobs minutely" in line for line in log)
    assert ran, "cron did not run Mailman-web's minutely job within 75 s"


def test_learnspam_takes_append_but_refuses_reading(deployed: dict[str, Any]) -> None:
    bob = user(deployed, 1)
    folder = deployed["vars"].get("cyrus_learnspam_folder", "LearnSpam")
    raw = (
        b"From: spammer@example.net\r\nTo: bob@example.org\r\nSubject: misclassified "
        + uuid.uuid4().hex.encode()
        + b"\r\n\r\nbuy now\r\n"
    )
    with smoke.imap_login(bob["uid"], bob["password"]) as imap:
        status, data = imap.append(folder, None, imaplib.Time2Internaldate(time.time()), raw)
        assert status == "OK", data
        status, data = imap.select(folder)
        assert status == "NO", data
        status, data = imap.select(folder, readonly=True)  # EXAMINE
        assert status == "NO", data
        # Not selected, so FETCH cannot even be sent; STATUS (message count) is refused too.
        status, data = imap.status(folder, "(MESSAGES)")
        assert status == "NO", data


def test_learn_teaches_the_deployed_spamd_from_learnspam(deployed: dict[str, Any]) -> None:
    """A tagged message a user files into LearnSpam is learned as ham and removed."""
    bob = user(deployed, 1)
    folder = deployed["vars"].get("cyrus_learnspam_folder", "LearnSpam")
    # Bayes remembers what it learned by Message-ID and by To+Date+body: both made unique.
    token = uuid.uuid4().hex.encode()
    raw = (
        b"From: newsletter@example.net\r\nTo: bob@example.org\r\nSubject: wanted "
        + token
        + b"\r\nMessage-ID: <"
        + token
        + b"@example.net>\r\nX-Spam-Flag: YES\r\n"
        + b"X-Spam-Status: Yes, score=3.5 required=3.0 tests=X=3.5\r\n"
        + b"\r\nthe monthly report you subscribed to, issue "
        + token
        + b"\r\n"
    )
    with smoke.imap_login(bob["uid"], bob["password"]) as imap:
        status, data = imap.append(folder, None, imaplib.Time2Internaldate(time.time()), raw)
        assert status == "OK", data
    learned = run_service_pass("learn")
    assert re.search(r"\b1 ham\b", learned), learned
    again = run_service_pass("learn")
    assert "ham" not in again, again


def test_mailglue_dns_prints_the_records_of_the_deployed_key_and_certificate(
    deployed: dict[str, Any],
) -> None:
    """What the admin publishes must match what the stack uses: the DKIM key OpenDKIM signs
    with and the certificate Postfix and Cyrus present (digest computed here with openssl)."""
    shown = subprocess.run(
        ["/opt/mailglue/venv/bin/mailglue", "dns"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert re.search(r"(?m)^example\.org\.\s+3600 IN MX\s+10 mail\.example\.org\.$", out), out
    key_file = Path("/etc/opendkim/keys/example.org/mail.txt").read_text(encoding="utf-8")
    published = "".join(re.findall(r'"([^"]*)"', key_file))
    key = re.search(r"p=([A-Za-z0-9+/=]+)", published.replace(" ", ""))
    assert key is not None and f"p={key.group(1)}" in out.replace('" "', "")
    pubkey = subprocess.run(
        ["openssl", "x509", "-in", "/etc/ssl/mailglue/mailglue.crt", "-noout", "-pubkey"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pubkey,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    digest = (
        subprocess.run(
            ["openssl", "dgst", "-sha256", "-r"],
            input=der,
            capture_output=True,
            check=True,
            timeout=30,
        )
        .stdout.split()[0]
        .decode()
    )
    assert re.search(rf"(?m)^_25\._tcp\.mail\.example\.org\.\s+3600 IN TLSA\s+3 1 1 {digest}$", out)
