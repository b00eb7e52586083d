"""Delivery-confirmed acceptance: the client's 250 comes only after Cyrus has the message.

Real Postfix, real Cyrus, the milter in `delivery.mode: lmtp`. Each test reads the mailbox
over IMAP the moment the SMTP reply arrives, without waiting: that is the property.
"""

from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime

from tests.harness.cyrus import Cyrus
from tests.harness.messages import build_message, unique_message_id
from tests.harness.milter import ScanMilter
from tests.harness.postfix import Postfix, SmtpSink
from tests.harness.smtp import send

from .conftest import MakePostfix

SENDER = "bob@relay.test"


def message(mid: str, **kwargs: object) -> bytes:
    return build_message(message_id=mid, date=datetime.now(UTC), **kwargs)  # type: ignore[arg-type]


def copies(cyrus: Cyrus, user: str, mid: str) -> int:
    """How many copies of the message are in the user's INBOX, right now."""
    return sum(
        1 for raw in cyrus.messages(user) if email.message_from_bytes(raw)["Message-ID"] == mid
    )


def test_250_only_after_both_mailboxes_have_it(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = send(postfix.address, SENDER, ["alice@example.org", "bob@example.org"], message(mid))
    assert tx.data is not None and tx.data.code == 250, tx
    # No waiting: at the moment of the 250 both copies are readable and the queue is empty.
    assert copies(cyrus, "alice", mid) == 1
    assert copies(cyrus, "bob", mid) == 1
    assert postfix.queue_is_empty()
    event = scan_milter.transaction(mid)
    assert event["action"] == "delivered"
    assert event["delivery"]["rule"] == "all-delivered"
    assert [r["outcome"] for r in event["recipients"]] == ["delivered", "delivered"]
    assert all(r["reply"].startswith("250 2.1.5") for r in event["recipients"])
    assert "lmtp" in event["timings_ms"]


def test_delivered_copy_carries_our_headers_and_a_received_line(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    raw = message(mid, extra_headers={"X-Spam-Flag": "NO"})
    tx = send(postfix.address, SENDER, ["carol@example.org"], raw)
    assert tx.data is not None and tx.data.code == 250, tx
    (stored,) = [
        email.message_from_bytes(m)
        for m in cyrus.messages("carol")
        if email.message_from_bytes(m)["Message-ID"] == mid
    ]
    assert stored["X-Spam-Flag"] is None
    assert stored["X-Spam-Status"].startswith("No, score=")
    received = stored.get_all("Received")
    assert received is not None
    assert "with LMTPA" in received[0]  # Cyrus's own, on top
    assert received[1].startswith("from client.relay.test (localhost [127.0.0.1])")
    assert "by mx.example.org (Postfix) with ESMTP id" in received[1]


def test_cyrus_down_gives_451_and_a_resend_is_delivered_once(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    raw = message(mid)
    cyrus.stop()
    try:
        tx = send(postfix.address, SENDER, ["alice@example.org", "bob@example.org"], raw)
        assert tx.data is not None and tx.data.code == 451, tx
        assert tx.data.enhanced == "4.4.1"
        assert postfix.queue_is_empty()
    finally:
        cyrus.start()
    assert copies(cyrus, "alice", mid) == 0 and copies(cyrus, "bob", mid) == 0
    event = scan_milter.transaction(mid)
    assert event["action"] == "tempfail"
    assert all(r["outcome"] == "deferred" for r in event["recipients"])

    tx = send(postfix.address, SENDER, ["alice@example.org", "bob@example.org"], raw)
    assert tx.data is not None and tx.data.code == 250, tx
    assert copies(cyrus, "alice", mid) == 1 and copies(cyrus, "bob", mid) == 1
    # The sender's MTA retrying once more (say our 250 was lost) stores nothing twice.
    tx = send(postfix.address, SENDER, ["alice@example.org"], raw)
    assert tx.data is not None and tx.data.code == 250, tx
    assert copies(cyrus, "alice", mid) == 1


def test_a_cyrus_restart_between_messages_costs_a_reconnect_not_a_deferral(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    """The milter holds its LMTP connection between messages; after Cyrus restarts, the next
    message goes out on a new one and the log says why, under that message's queue id."""
    first = send(postfix.address, SENDER, ["alice@example.org"], message(unique_message_id()))
    assert first.data is not None and first.data.code == 250, first
    cyrus.stop()
    cyrus.start()
    mid = unique_message_id()
    tx = send(postfix.address, SENDER, ["alice@example.org"], message(mid))
    assert tx.data is not None and tx.data.code == 250, tx
    assert copies(cyrus, "alice", mid) == 1
    queue_id = scan_milter.transaction(mid)["queue_id"]
    (reconnect,) = [
        e
        for e in scan_milter.events()
        if e.get("event") == "lmtp.reconnect" and e.get("queue_id") == queue_id
    ]
    assert reconnect["reason"].startswith("the held connection was dead"), reconnect
    assert reconnect["backend"], reconnect


def test_all_local_recipients_refused_is_cyrus_5xx_to_the_client(
    scan_milter: ScanMilter, postfix: Postfix
) -> None:
    mid = unique_message_id()
    tx = send(postfix.address, SENDER, ["nobody@example.org"], message(mid))
    assert tx.data is not None and tx.data.code == 550, tx
    assert tx.data.enhanced == "5.1.1"
    assert postfix.queue_is_empty()
    assert scan_milter.transaction(mid)["delivery"]["rule"] == "all-permanent"


def test_mixed_default_leaves_the_refused_one_to_postfix(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = send(postfix.address, SENDER, ["alice@example.org", "nobody@example.org"], message(mid))
    assert tx.data is not None and tx.data.code == 250, tx
    assert copies(cyrus, "alice", mid) == 1
    event = scan_milter.transaction(mid)
    assert event["delivery"]["rule"] == "mixed"
    outcomes = {r["recipient"]: r["outcome"] for r in event["recipients"]}
    assert outcomes == {"alice@example.org": "delivered", "nobody@example.org": "left-to-queue"}
    # Postfix's queue got only the refused recipient (its lmtp: transport bounces it).
    postfix.wait_queue_empty()
    assert "to=<nobody@example.org>" in postfix.maillog.read_text()
    assert copies(cyrus, "alice", mid) == 1  # alice was removed from the queued copy


def test_mixed_strict_tempfails_and_the_retry_does_not_duplicate(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    scan_milter.ensure({"delivery": {"strict": True}})
    mid = unique_message_id()
    raw = message(mid)
    tx = send(postfix.address, SENDER, ["alice@example.org", "nobody@example.org"], raw)
    assert tx.data is not None and tx.data.code == 451, tx
    assert postfix.queue_is_empty()
    assert copies(cyrus, "alice", mid) == 1  # delivered before the 451 ...
    tx = send(postfix.address, SENDER, ["alice@example.org"], raw)
    assert tx.data is not None and tx.data.code == 250, tx
    assert copies(cyrus, "alice", mid) == 1  # ... and not again on the retry


def test_non_local_recipients_stay_in_postfix_for_relay(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, smtp_sink: SmtpSink
) -> None:
    mid = unique_message_id()
    tx = send(postfix.address, SENDER, ["alice@example.org", "carl@relay.test"], message(mid))
    assert tx.data is not None and tx.data.code == 250, tx
    assert copies(cyrus, "alice", mid) == 1
    event = scan_milter.transaction(mid)
    assert event["delivery"]["rule"] == "all-delivered-nonlocal-remain"
    postfix.wait_queue_empty()
    relayed = [m for m in smtp_sink.messages() if mid.encode() in m]
    assert relayed, "the non-local recipient's copy was not relayed"
    assert b"X-Spam-Status: No, score=" in relayed[0]
    assert copies(cyrus, "alice", mid) == 1


def test_missing_message_id_is_derived_from_content(
    scan_milter: ScanMilter, make_postfix: MakePostfix, cyrus: Cyrus, milter_address: str
) -> None:
    """From a remote client Postfix adds no Message-ID; ours must be the same on a retry."""
    pf = make_postfix(milter=milter_address, main_cf={"local_header_rewrite_clients": ""})
    subject = f"no id {uuid.uuid4().hex}"
    raw = (
        f"From: Bob <{SENDER}>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n\r\nno message id here\r\n"
    ).encode()
    for _ in range(2):
        tx = send(pf.address, SENDER, ["alice@example.org"], raw)
        assert tx.data is not None and tx.data.code == 250, tx
    stored = [email.message_from_bytes(m) for m in cyrus.messages("alice") if subject.encode() in m]
    assert len(stored) == 1, "the second send was not recognised as a duplicate"
    assert stored[0]["Message-ID"].endswith(".mailglue@mx.example.org>")
