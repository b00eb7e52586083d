"""The policy service against the real slapd and Cyrus, and behind a real Postfix.

`mailglue policy` runs as a subprocess; Postfix calls it with `check_policy_service` from
smtpd_recipient_restrictions, exactly as postfix-conf/policy.main.cf shows, and delivers
accepted mail to Cyrus over LMTP, so "accepted" is checked by reading the mailbox count.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import pytest

from tests.harness.cyrus import Cyrus
from tests.harness.messages import build_message
from tests.harness.postfix import MYHOSTNAME, Postfix, SmtpSink
from tests.harness.process import LOOPBACK, chown, free_port, make_traversable, wait_until
from tests.harness.slapd import BASE_DN, PEOPLE_DN, ROOT_DN, ROOT_PASSWORD, Slapd
from tests.harness.smtp import Reply

pytestmark = pytest.mark.integration

# In LDAP, but Cyrus has no mailbox for erin: she has "never logged in".
ERIN_DN = f"uid=erin,{PEOPLE_DN}"
ERIN = "erin@example.org"
SASL_PASSWORDS = {"alice": "alice-secret", "carol": "carol-secret"}
RATE_MESSAGES = 3
RATE_WINDOW = 4.0


@dataclass
class PolicyProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def service(self) -> str:
        return f"inet:{LOOPBACK}:{self.port}"

    def events(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def erin(slapd: Slapd) -> Iterator[str]:
    conn = ldap.initialize(slapd.uri)
    conn.simple_bind_s(ROOT_DN, ROOT_PASSWORD)
    entry = [
        ("objectClass", [b"inetOrgPerson"]),
        ("uid", [b"erin"]),
        ("cn", [b"Erin"]),
        ("sn", [b"Erin"]),
        ("mail", [ERIN.encode()]),
    ]
    with contextlib.suppress(ldap.ALREADY_EXISTS):
        conn.add_s(ERIN_DN, entry)
    conn.unbind_s()
    try:
        yield ERIN
    finally:
        conn = ldap.initialize(slapd.uri)  # a fresh one: a test restarts slapd
        conn.simple_bind_s(ROOT_DN, ROOT_PASSWORD)
        conn.delete_s(ERIN_DN)
        conn.unbind_s()


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"policy service exited {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("policy service did not listen")


@pytest.fixture(scope="module")
def policy(
    tmp_path_factory: pytest.TempPathFactory, slapd: Slapd, cyrus: Cyrus, erin: str
) -> Iterator[PolicyProcess]:
    root = tmp_path_factory.mktemp("policy")
    port = free_port()
    password_file = root / "ldap.secret"
    password_file.write_text(ROOT_PASSWORD + "\n")
    password_file.chmod(0o600)
    log_path = root / "policy.log"
    config = root / "policy.yaml"
    config.write_text(
        f"""\
policy:
  listen: inet:{LOOPBACK}:{port}
  local_domains: [example.org]
  recipient_delimiter: "+"
  decision_timeout: 5
ldap:
  uri: {slapd.uri}
  base: {BASE_DN}
  bind_dn: {ROOT_DN}
  bind_password_file: {password_file}
  address_attributes: [mail]
  login_attributes: [uid]
  timeout: 2
mailbox:
  lmtp: unix:{cyrus.lmtp_socket}
  probe_recipient: "{{uid}}"
  positive_ttl: 60
  negative_ttl: 1
rate_limits:
  window: {RATE_WINDOW}
  sasl_user: {{messages: {RATE_MESSAGES}, recipients: 100}}
  client_address: {{messages: 0, recipients: 0}}
log:
  file: {log_path}
"""
    )
    mailglue = Path(sys.executable).with_name("mailglue")
    stderr = open(root / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(mailglue), "policy", "--config", str(config)], stdout=stderr, stderr=stderr
    )
    try:
        _wait_port(port, proc, root / "stderr.log")
        yield PolicyProcess(proc, port, log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
    assert ROOT_PASSWORD not in log_path.read_text()


def _sasl_dir(root: Path) -> Path:
    """A sasldb for Postfix's smtpd (Cyrus's own is not readable by user postfix).

    Debian's Postfix reads `$config_directory/sasl/smtpd.conf` whatever
    cyrus_sasl_config_path says, so the file goes there (the path is set too, for others).
    """
    sasl = root / "postfix" / "etc" / "sasl"
    sasl.mkdir(parents=True, exist_ok=True)
    db = sasl / "sasldb2"
    for user, password in SASL_PASSWORDS.items():
        subprocess.run(
            ["saslpasswd2", "-p", "-c", "-f", str(db), "-u", MYHOSTNAME, user],
            input=password,
            text=True,
            check=True,
            capture_output=True,
        )
    (sasl / "smtpd.conf").write_text(
        f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {db}\n"
        "mech_list: PLAIN LOGIN\n"
    )
    chown(db, "postfix", mode=0o600)
    return sasl


@pytest.fixture(scope="module")
def mx(
    tmp_path_factory: pytest.TempPathFactory,
    policy: PolicyProcess,
    cyrus: Cyrus,
    smtp_sink: SmtpSink,
) -> Iterator[Postfix]:
    """Postfix wired as postfix-conf/policy.main.cf says, plus SASL for the sender check."""
    root = tmp_path_factory.mktemp("policy-postfix")
    make_traversable(root)
    sasl = _sasl_dir(root)
    make_traversable(sasl)
    check = (
        f"check_policy_service {{ {policy.service}, timeout=10s, default_action=DEFER_IF_PERMIT, "
        "policy_context="
    )
    pf = Postfix(
        root / "postfix",
        cyrus.lmtp_socket,
        smtp_sink.address,
        None,
        {
            # 127.0.0.1 is in the harness's mynetworks; relaying is for SASL users only here.
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_sender_restrictions": f"reject_non_fqdn_sender, {check}sender }}, permit",
            "smtpd_recipient_restrictions": (
                f"reject_non_fqdn_recipient, reject_unauth_destination, {check}recipient }}, permit"
            ),
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": str(sasl),
            "smtpd_sasl_security_options": "noanonymous",
        },
    )
    pf.start()
    try:
        yield pf
    finally:
        pf.stop()


@dataclass
class Result:
    mail: Reply
    rcpt: dict[str, Reply]
    data: Reply | None


def send(
    pf: Postfix,
    sender: str,
    recipients: list[str],
    login: str | None = None,
) -> Result:
    message = build_message(uuid.uuid4().hex, sender=sender or "mailer-daemon@relay.test")
    with smtplib.SMTP(*pf.address, timeout=60) as smtp:
        smtp.ehlo("client.relay.test")
        if login is not None:
            smtp.login(login, SASL_PASSWORDS[login])
        mail = Reply(*_text(smtp.mail(sender)))
        rcpt = {r: Reply(*_text(smtp.rcpt(r))) for r in recipients}
        data = None
        if any(r.code == 250 for r in rcpt.values()):
            data = Reply(*_text(smtp.data(message)))
        else:
            smtp.rset()
    return Result(mail, rcpt, data)


def _text(reply: tuple[int, bytes]) -> tuple[int, str]:
    return reply[0], reply[1].decode("utf-8", "replace").replace("\n", " ")


# --- directly against the service (real slapd + Cyrus, no Postfix) ---------------------------


def ask(port: int, **attrs: str) -> str:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.1",
        "sender": "someone@relay.test",
        "instance": uuid.uuid4().hex,
    }
    base.update(attrs)
    data = "".join(f"{k}={v}\n" for k, v in base.items()).encode() + b"\n"
    with socket.create_connection((LOOPBACK, port), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(4096)
            assert chunk
            buf += chunk
    return buf.decode()[len("action=") : -2]


@pytest.mark.parametrize(
    "recipient",
    [
        "*@example.org",
        "al*@example.org",
        "*)(uid=*@example.org",
        "alice)(mail=*@example.org",
        "\\00@example.org",
        "\\2a@example.org",
        "a\\29\\28@example.org",
    ],
)
def test_filter_injection_is_inert(policy: PolicyProcess, recipient: str) -> None:
    reply = ask(policy.port, recipient=recipient)
    assert reply.startswith("550 5.1.1 "), reply
    assert "no such user" in reply


def test_raw_nul_in_request_is_refused_as_malformed(policy: PolicyProcess) -> None:
    reply = ask(policy.port, recipient="alice\x00@example.org")
    assert reply == "DEFER_IF_PERMIT 4.3.0 malformed policy request"


def test_direct_answers(policy: PolicyProcess) -> None:
    assert ask(policy.port, recipient="alice@example.org") == "DUNNO"
    assert ask(policy.port, recipient="Alice.Liddell+x@example.org") == "DUNNO"  # alias of alice
    assert "never logged in" in ask(policy.port, recipient=ERIN)
    assert ask(policy.port, recipient="x@relay.test") == "DUNNO"
    # a "domain" that is an injection attempt is simply not ours: Postfix decides relaying
    assert ask(policy.port, recipient="alice@example.org)(|(mail=*") == "DUNNO"


# --- through Postfix ---------------------------------------------------------------------------


def test_unknown_recipient_refused_at_rcpt(mx: Postfix) -> None:
    result = send(mx, "sender@relay.test", ["nobody@example.org"])
    reply = result.rcpt["nobody@example.org"]
    assert (reply.code, reply.enhanced) == (550, "5.1.1"), reply
    assert "no such user" in reply.text
    assert result.data is None  # DATA never reached


def test_user_without_mailbox_refused_with_never_logged_in(mx: Postfix, erin: str) -> None:
    reply = send(mx, "sender@relay.test", [erin]).rcpt[erin]
    assert reply.code == 550, reply
    assert "mailbox not yet created (the user has never logged in)" in reply.text


def test_good_recipient_accepted_and_delivered(mx: Postfix, cyrus: Cyrus) -> None:
    before = cyrus.count("bob")
    result = send(mx, "sender@relay.test", ["bob@example.org"])
    assert result.rcpt["bob@example.org"].code == 250
    assert result.data is not None and result.data.code == 250
    wait_until(lambda: cyrus.count("bob") == before + 1, what="delivery to bob")


def test_one_good_one_unknown(mx: Postfix, cyrus: Cyrus) -> None:
    before = cyrus.count("carol")
    result = send(mx, "sender@relay.test", ["carol@example.org", "ghost@example.org"])
    assert result.rcpt["carol@example.org"].code == 250
    assert result.rcpt["ghost@example.org"].code == 550
    assert result.data is not None and result.data.code == 250
    wait_until(lambda: cyrus.count("carol") == before + 1, what="delivery to carol")
    mx.wait_queue_empty()  # nothing bounced or deferred


def test_unauthenticated_relay_refused_by_postfix(mx: Postfix) -> None:
    # relay.test is one of the harness's relay_domains; outside.test is nobody's
    reply = send(mx, "sender@relay.test", ["someone@outside.test"]).rcpt["someone@outside.test"]
    assert reply.code == 554 and "Relay access denied" in reply.text, reply


def test_authenticated_sender_must_own_address(mx: Postfix, cyrus: Cyrus) -> None:
    forged = send(mx, "bob@example.org", ["someone@relay.test"], login="alice")
    reply = forged.rcpt["someone@relay.test"]
    assert reply.code == 553 and reply.enhanced == "5.7.1", reply
    assert "not owned by user alice" in reply.text
    own = send(mx, "alice.liddell@example.org", ["bob@example.org"], login="alice")
    assert own.rcpt["bob@example.org"].code == 250
    assert own.data is not None and own.data.code == 250


def test_rate_limit_per_sasl_user(mx: Postfix) -> None:
    time.sleep(RATE_WINDOW)  # a fresh window for carol
    codes = [
        send(mx, "carol@example.org", ["bob@example.org"], login="carol").rcpt["bob@example.org"]
        for _ in range(RATE_MESSAGES + 1)
    ]
    assert [r.code for r in codes] == [250] * RATE_MESSAGES + [450], codes
    assert codes[-1].enhanced == "4.7.1"
    time.sleep(RATE_WINDOW)
    again = send(mx, "carol@example.org", ["bob@example.org"], login="carol")
    assert again.rcpt["bob@example.org"].code == 250


def test_slapd_down_defers_then_recovers(mx: Postfix, slapd: Slapd, cyrus: Cyrus) -> None:
    before = cyrus.count("alice")
    slapd.stop()
    try:
        result = send(mx, "sender@relay.test", ["alice@example.org"])
        reply = result.rcpt["alice@example.org"]
        assert reply.code == 450 and reply.enhanced == "4.4.3", reply  # DEFER_IF_PERMIT
        assert result.data is None
    finally:
        slapd.start()
    assert mx.queue_is_empty()  # nothing accepted, nothing bounced
    result = send(mx, "sender@relay.test", ["alice@example.org"])
    assert result.rcpt["alice@example.org"].code == 250
    wait_until(lambda: cyrus.count("alice") == before + 1, what="delivery to alice")


def test_every_decision_logged(policy: PolicyProcess, mx: Postfix) -> None:
    send(mx, "sender@relay.test", ["nobody@example.org"])
    wait_until(
        lambda: any(e.get("recipient") == "nobody@example.org" for e in policy.events()),
        what="decision logged",
    )
    event = [e for e in policy.events() if e.get("recipient") == "nobody@example.org"][-1]
    assert event["decision"] == "reject" and event["reason"] == "no_such_user"
    assert event["client_address"] == "127.0.0.1"
    assert event["sender"] == "sender@relay.test"
    assert isinstance(event["latency_ms"], float)


# --- load: many concurrent connections, warm cache ---------------------------------------------


def test_many_concurrent_connections(policy: PolicyProcess) -> None:
    """20 connections x 250 requests (5,000), as Postfix's smtpd processes would hold them:
    every request answered and logged. Latencies are printed for information only (speed is
    measured in benchmarks, not asserted in tests)."""
    recipients = [
        "alice@example.org",
        "bob@example.org",
        "nobody@example.org",
        ERIN,
        "x@relay.test",
        "carol@example.org",
    ]
    for r in recipients:  # warm the mailbox cache
        ask(policy.port, recipient=r)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            with socket.create_connection((LOOPBACK, policy.port), timeout=30) as s:
                reader = s.makefile("rb")
                mine = []
                for i in range(250):
                    rcpt = recipients[(n + i) % len(recipients)]
                    data = (
                        "request=smtpd_access_policy\nprotocol_state=RCPT\n"
                        f"client_address=192.0.2.{n}\nsender=s@relay.test\n"
                        f"recipient={rcpt}\ninstance=load{n}.{i}\n\n"
                    ).encode()
                    t0 = time.perf_counter()
                    s.sendall(data)
                    line = reader.readline()
                    assert reader.readline() == b"\n"
                    mine.append((time.perf_counter() - t0) * 1000)
                    assert line.startswith(b"action=")
            with lock:
                latencies.extend(mine)
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert not errors, errors
    assert len(latencies) == 5000
    q = statistics.quantiles(latencies, n=100)
    wait_until(
        lambda: sum(str(e.get("instance", "")).startswith("load") for e in policy.events()) == 5000,
        what="all load decisions logged",
    )
    server_ms = [
        float(e["latency_ms"])  # type: ignore[arg-type]
        for e in policy.events()
        if str(e.get("instance", "")).startswith("load")
    ]
    sq = statistics.quantiles(server_ms, n=100)
    report = (
        f"policy load: 5000 requests, 20 connections, {5000 / elapsed:.0f} req/s; "
        f"client-side p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms, max {max(latencies):.2f} ms; "
        f"server-side (logged latency_ms) p50 {sq[49]:.2f} ms, p99 {sq[98]:.2f} ms"
    )
    print(report)
    Path(os.environ.get("POLICY_LOAD_REPORT", "/tmp/policy-load.txt")).write_text(report + "\n")
