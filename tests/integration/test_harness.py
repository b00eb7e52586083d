"""Proof that the harness starts real daemons that behave as the later tests assume."""

from __future__ import annotations

import smtplib
import socket
import struct
from decimal import Decimal
from pathlib import Path

import ldap
import pytest

from tests.harness.clamd import CLAM_ZIP, Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.logs import DaemonLogs
from tests.harness.messages import (
    EICAR,
    GTUBE,
    build_attachment_message,
    build_message,
    unique_message_id,
)
from tests.harness.postfix import Postfix, SmtpSink
from tests.harness.process import accepts, wait_until
from tests.harness.slapd import BASE_DN, ROOT_DN, ROOT_PASSWORD, USERS, Slapd
from tests.harness.smtp import Reply, send
from tests.harness.spamd import TEST_RULES, Spamd, TestRule
from tests.harness.syslog_catcher import SyslogCatcher

from .conftest import MakePostfix

pytestmark = pytest.mark.integration


# --- raw protocol helpers (deliberately independent of mailglue's own clients) ---------------


def spamc_headers(address: tuple[str, int], message: bytes) -> dict[str, str]:
    """SPAMC HEADERS: returns the `Spam:` line and the unfolded headers spamd would add."""
    with socket.create_connection(address, timeout=30) as s:
        s.sendall(b"HEADERS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(message) + message)
        s.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *head_lines = head.decode().split("\r\n")
    assert status.endswith("EX_OK"), reply[:300]
    result = {k: v.strip() for k, _, v in (line.partition(":") for line in head_lines)}
    unfolded = body.decode().replace("\r\n\t", " ").replace("\r\n ", " ")
    for line in unfolded.split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            break  # end of the header block
        result[name] = value.strip()
    return result


def rule_scores(headers: dict[str, str]) -> dict[str, Decimal]:
    """`X-Spam-Mailglue-Tests: RULE=score,...` as exact Decimals ("none" → {})."""
    value = headers["X-Spam-Mailglue-Tests"]
    if value == "none":
        return {}
    return {k: Decimal(v) for k, _, v in (item.partition("=") for item in value.split(","))}


def clamd_instream(address: tuple[str, int] | Path, data: bytes) -> str:
    """clamd INSTREAM in 64 KiB chunks, as the milter will send it."""
    family = socket.AF_UNIX if isinstance(address, Path) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(address) if isinstance(address, Path) else address)
        s.sendall(b"zINSTREAM\0")
        for i in range(0, len(data), 65536):
            chunk = data[i : i + 65536]
            s.sendall(struct.pack("!I", len(chunk)) + chunk)
        s.sendall(struct.pack("!I", 0))
        return b"".join(iter(lambda: s.recv(4096), b"")).rstrip(b"\0").decode()


def unique_message(token: str = "", recipient: str = "alice@example.org") -> tuple[str, bytes]:
    mid = unique_message_id()
    return mid, build_message(token, recipient=recipient, message_id=mid)


# --- spamd -----------------------------------------------------------------------------------


def test_spamd_gtube_scores_1000(spamd: Spamd) -> None:
    headers = spamc_headers(spamd.address, build_message(GTUBE))
    assert headers["Spam"].startswith("True ; 1000.0 /")
    assert rule_scores(headers) == {"GTUBE": Decimal(1000)}


def test_spamd_clean_message_scores_zero(spamd: Spamd) -> None:
    headers = spamc_headers(spamd.address, build_message())
    assert rule_scores(headers) == {}
    assert headers["Spam"].startswith("False ; 0.0 /")


@pytest.mark.parametrize("rule", TEST_RULES, ids=lambda r: r.name)
def test_spamd_test_rule_scores_exactly(spamd: Spamd, rule: TestRule) -> None:
    scores = rule_scores(spamc_headers(spamd.address, build_message(rule.token)))
    assert scores == {rule.name: rule.score}
    assert sum(scores.values()) == rule.score


# --- clamd -----------------------------------------------------------------------------------

MESSAGES = {
    "eicar-in-body": (build_message(body=f"Hello,\n\n{EICAR}\n"), "FOUND"),
    "clam-zip-attached": (build_attachment_message("clam.zip", CLAM_ZIP.read_bytes()), "FOUND"),
    "clean": (build_message(), "OK"),
}


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("case", list(MESSAGES))
def test_clamd_instream(clamd: Clamd, transport: str, case: str) -> None:
    message, expected = MESSAGES[case]
    address = clamd.address if transport == "tcp" else clamd.socket_path
    reply = clamd_instream(address, message)
    assert reply.startswith("stream: ") and reply.endswith(expected), reply
    if expected == "FOUND":
        assert ".UNOFFICIAL" in reply


def test_clamd_scans_30mb_message(clamd: Clamd) -> None:
    filler = ("x" * 76 + "\n") * (30 * 1024 * 1024 // 77)
    reply = clamd_instream(clamd.address, build_message(body=filler))
    assert reply == "stream: OK"


# --- Cyrus -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_cyrus_lmtp_unknown_mailbox_is_550_511(cyrus: Cyrus, transport: str) -> None:
    if transport == "tcp":
        lmtp = smtplib.LMTP(cyrus.host, cyrus.lmtp_port, timeout=10)
    else:
        lmtp = smtplib.LMTP(str(cyrus.lmtp_socket), timeout=10)
    with lmtp:
        lmtp.ehlo("mx.example.org")
        assert lmtp.mail("bob@relay.test")[0] == 250
        code, text = lmtp.rcpt("dave@example.org")  # SASL user without a mailbox
        assert code == 550 and b"5.1.1" in text
        assert lmtp.rcpt("alice@example.org")[0] == 250


def test_cyrus_lmtp_tcp_delivers_and_survives_restart(cyrus: Cyrus) -> None:
    mid, message = unique_message(recipient="carol@example.org")
    before = cyrus.count("carol")
    with smtplib.LMTP(cyrus.host, cyrus.lmtp_port, timeout=10) as lmtp:
        lmtp.sendmail("bob@relay.test", ["carol@example.org"], message)
    assert cyrus.count("carol") == before + 1

    cyrus.stop()
    assert not accepts(cyrus.lmtp_socket) and not accepts(cyrus.imap_address)
    cyrus.start()
    stored = cyrus.messages("carol")
    assert any(mid.encode() in m for m in stored)


# --- slapd -----------------------------------------------------------------------------------


def test_slapd_finds_user_by_alias(slapd: Slapd) -> None:
    conn = ldap.initialize(slapd.uri)
    conn.simple_bind_s(ROOT_DN, ROOT_PASSWORD)
    found = conn.search_s(
        BASE_DN, ldap.SCOPE_SUBTREE, "(mail=alice.liddell@example.org)", ["uid", "mail"]
    )
    assert [(dn, attrs["uid"]) for dn, attrs in found] == [(USERS[0].dn, [b"alice"])]
    assert b"alice@example.org" in found[0][1]["mail"]
    conn.unbind_s()


def test_slapd_user_bind_and_restart(slapd: Slapd) -> None:
    bob = USERS[1]
    slapd.stop()
    slapd.start()
    conn = ldap.initialize(slapd.uri)
    conn.simple_bind_s(bob.dn, bob.password)
    assert conn.whoami_s() == f"dn:{bob.dn}"
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        ldap.initialize(slapd.uri).simple_bind_s(bob.dn, "wrong")


# --- Postfix ---------------------------------------------------------------------------------


def test_postfix_delivers_to_cyrus_and_relays(
    make_postfix: MakePostfix, cyrus: Cyrus, smtp_sink: SmtpSink, postfix: Postfix
) -> None:
    pf = make_postfix(milter=None)
    assert postfix.running() and pf.running()  # two private instances side by side
    assert pf.queue_dir != postfix.queue_dir and pf.port != postfix.port
    mid, message = unique_message()
    tx = send(pf.address, "bob@relay.test", ["alice@example.org", "zed@relay.test"], message)
    assert tx.data is not None and tx.data.code == 250, tx

    wait_until(lambda: any(mid.encode() in m for m in cyrus.messages("alice")), what="alice's copy")
    wait_until(lambda: any(mid.encode() in m for m in smtp_sink.messages()), what="relayed copy")
    pf.wait_queue_empty()


def test_postfix_queues_while_cyrus_is_down(make_postfix: MakePostfix, cyrus: Cyrus) -> None:
    pf = make_postfix()
    mid, message = unique_message(recipient="bob@example.org")
    cyrus.stop()
    try:
        tx = send(pf.address, "carol@relay.test", ["bob@example.org"], message)
        assert tx.data is not None and tx.data.code == 250
        wait_until(lambda: "connect to" in pf.maillog.read_text(), what="deferred delivery")
        assert len(pf.queue_ids()) == 1
    finally:
        cyrus.start()
    pf.flush()
    pf.wait_queue_empty()
    assert any(mid.encode() in m for m in cyrus.messages("bob"))


# --- harness pieces --------------------------------------------------------------------------


def test_reply_enhanced_status() -> None:
    assert Reply(550, "5.1.1 <x@example.org>: Recipient address rejected").enhanced == "5.1.1"
    assert Reply(451, "Service unavailable").enhanced is None


def test_daemon_logs_show_only_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    log.write_text("old line\n")
    logs = DaemonLogs(max_lines=2)
    logs.register("d", log)
    logs.mark()
    [(title, text)] = logs.sections()
    assert title == "daemon logs" and "nothing new" in text
    with log.open("a") as f:
        f.write("one\ntwo\nthree\n")
    [(title, text)] = logs.sections()
    assert "d" in title and text.splitlines()[1:] == ["two", "three"]


def test_the_syslog_catcher_leaves_a_socket_that_is_not_its_own(tmp_path: Path) -> None:
    """The deployment's rsyslogd may take /dev/log over while the catcher runs; stopping the
    catcher must not remove rsyslogd's socket (it once did: every daemon's log went silent)."""
    path = tmp_path / "log"
    catcher = SyslogCatcher(tmp_path / "caught.log", socket_path=path)
    catcher.start()
    assert catcher.owned
    path.unlink()  # what rsyslogd's imuxsock does: unlink, then bind its own
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(str(path))
    try:
        catcher.stop()
        assert path.exists(), "the other listener's socket was removed"
    finally:
        other.close()
    mine = SyslogCatcher(tmp_path / "caught2.log", socket_path=tmp_path / "log2")
    mine.start()
    mine.stop()
    assert not (tmp_path / "log2").exists()  # its own socket is still cleaned up
