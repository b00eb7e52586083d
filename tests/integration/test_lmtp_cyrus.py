"""lmtp_bridge against the real Cyrus lmtpd (unix socket and TCP), read back over IMAP."""

from __future__ import annotations

import uuid

import pytest

from lmtp_bridge.client import LmtpClient, Timeouts
from lmtp_bridge.fold import FoldAction, Rule, fold
from lmtp_bridge.protocol import Stage
from tests.harness.cyrus import Cyrus

pytestmark = pytest.mark.integration

TIMEOUTS = Timeouts(connect=5, command=10, data=10, final=30)


def message(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    head = (
        f"From: Sender <sender@relay.test>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@lmtp-bridge.test>\r\n"
        "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n\r\n"
    ).encode()
    return head + body


@pytest.fixture(params=["unix", "inet"])
def address(request: pytest.FixtureRequest, cyrus: Cyrus) -> str:
    if request.param == "unix":
        return f"unix:{cyrus.lmtp_socket}"
    host, port = cyrus.lmtp_address
    return f"inet:{host}:{port}"


def test_per_recipient_replies_from_cyrus(cyrus: Cyrus, address: str) -> None:
    before = {u: cyrus.count(u) for u in ("alice", "bob")}
    subject = f"per-recipient {uuid.uuid4()}"
    with LmtpClient(address, lhlo_name="mx.test", timeouts=TIMEOUTS) as client:
        result = client.deliver(
            "sender@relay.test",
            ["alice@example.org", "dave@example.org", "bob@example.org"],
            message(subject),
        )
    assert result.outcomes["alice@example.org"].stage is Stage.FINAL
    assert result.replies["alice@example.org"].code == 250
    assert result.replies["bob@example.org"].code == 250
    refused = result.outcomes["dave@example.org"]
    assert refused.stage is Stage.RCPT
    assert (refused.reply.code, refused.reply.enhanced) == (550, "5.1.1")
    assert {u: cyrus.count(u) for u in ("alice", "bob")} == {u: n + 1 for u, n in before.items()}

    decision = fold(result.replies, [])
    assert decision.action is FoldAction.ACCEPT and decision.rule is Rule.MIXED
    assert decision.delete_recipients == ("alice@example.org", "bob@example.org")


def test_dot_stuffed_lines_arrive_intact(cyrus: Cyrus, address: str) -> None:
    subject = f"dots {uuid.uuid4()}"
    body = b".hidden\r\n.\r\n..two\r\nlast line without newline"
    with LmtpClient(address, timeouts=TIMEOUTS) as client:
        result = client.deliver("", ["carol@example.org"], message(subject, body))
    assert result.replies["carol@example.org"].code == 250
    (stored,) = [m for m in cyrus.messages("carol") if subject.encode() in m]
    assert stored.endswith(b"\r\n\r\n.hidden\r\n.\r\n..two\r\nlast line without newline\r\n")


def test_retry_is_suppressed_as_duplicate_and_connection_reused(cyrus: Cyrus, address: str) -> None:
    msg = message(f"dup {uuid.uuid4()}")
    before = cyrus.count("bob")
    with LmtpClient(address, timeouts=TIMEOUTS) as client:
        first = client.deliver("sender@relay.test", ["bob@example.org"], msg)
        second = client.deliver("sender@relay.test", ["bob@example.org"], msg)
    assert first.replies["bob@example.org"].code == 250
    assert second.replies["bob@example.org"].code == 250
    assert second.timings.reused_connection
    assert cyrus.count("bob") == before + 1


def test_probe_tells_existing_from_missing_mailboxes(cyrus: Cyrus, address: str) -> None:
    with LmtpClient(address, timeouts=TIMEOUTS) as client:
        assert client.probe("alice@example.org").code == 250
        missing = client.probe("dave@example.org")
    assert (missing.code, missing.enhanced) == (550, "5.1.1")
