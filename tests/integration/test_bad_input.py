"""Bad input through the real stack: each message gets a definite reply and a log event.

8-bit headers, missing Message-ID/Date, a 30 MB message, broken MIME, bare LF, NUL bytes:
the client must get 250 or a 5xx it can act on, never a hang, a crash or a lost message.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.harness.cyrus import Cyrus
from tests.harness.messages import unique_message_id
from tests.harness.milter import ScanMilter, wait_for
from tests.harness.postfix import Postfix
from tests.harness.smtp import Transaction, send

SENDER = "bob@relay.test"


def headers(subject: str, *, with_ids: bool = True) -> bytes:
    lines = [
        f"From: Bob <{SENDER}>",
        "To: Alice <alice@example.org>",
        f"Subject: {subject}",
    ]
    if with_ids:
        lines += [
            f"Date: {format_datetime(datetime.now(UTC))}",
            f"Message-ID: {unique_message_id()}",
        ]
    return ("\r\n".join(lines) + "\r\n").encode()


def queue_id(tx: Transaction) -> str:
    assert tx.data is not None
    match = re.search(r"queued as (\w+)", tx.data.text)
    assert match, tx.data
    return match.group(1)


def stored_with(cyrus: Cyrus, user: str, token: bytes) -> bool:
    """Is a message whose Subject carries `token` in the mailbox?

    Matched on an ASCII token: Cyrus replaces 8-bit header bytes with 'X' (munge8bit).
    """
    return any(
        token in match.group(1)
        for raw in cyrus.messages(user)
        if (match := re.search(rb"^Subject: ([^\r\n]*)", raw, re.M))
    )


def assert_delivered_and_logged(
    tx: Transaction, scan_milter: ScanMilter, cyrus: Cyrus, subject: bytes
) -> dict[str, object]:
    assert tx.data is not None and tx.data.code == 250, tx
    event = scan_milter.transaction(queue_id(tx), key="queue_id")
    assert event["action"] == "delivered"
    token = subject.split()[-1]
    assert wait_for(lambda: stored_with(cyrus, "alice", token), timeout=30), subject
    return event


def test_raw_utf8_headers(scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus) -> None:
    subject = f"Grüße aus Köln {uuid.uuid4().hex}".encode()
    raw = (
        headers("x").replace(b"Subject: x", b"Subject: " + subject)
        + "X-Note: naïve café\r\n".encode()
        + b"\r\nBody with \xc3\xa9 too.\r\n"
    )
    event = assert_delivered_and_logged(
        send(postfix.address, SENDER, ["alice@example.org"], raw), scan_milter, cyrus, subject
    )
    assert "score" in event["spam"]  # type: ignore[operator]


def test_latin1_header_bytes_survive(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    subject = b"caf\xe9 " + uuid.uuid4().hex.encode()
    raw = headers("x").replace(b"Subject: x", b"Subject: " + subject) + b"\r\nbody\r\n"
    assert_delivered_and_logged(
        send(postfix.address, SENDER, ["alice@example.org"], raw), scan_milter, cyrus, subject
    )


def test_no_message_id_and_no_date(scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus) -> None:
    subject = f"no ids {uuid.uuid4().hex}"
    raw = headers(subject, with_ids=False) + b"\r\nplain body\r\n"
    event = assert_delivered_and_logged(
        send(postfix.address, SENDER, ["alice@example.org"], raw),
        scan_milter,
        cyrus,
        subject.encode(),
    )
    # Postfix adds Message-ID and Date for clients in local_header_rewrite_clients (loopback
    # here) before the milter sees the message; from remote clients the milter derives one.
    assert isinstance(event["message_id"], str) and event["message_id"].startswith("<")


def test_thirty_megabyte_message(scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus) -> None:
    subject = f"big {uuid.uuid4().hex}"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"
    body = line * (30 * 1024 * 1024 // len(line))
    raw = headers(subject) + b"\r\n" + body
    tx = send(postfix.address, SENDER, ["alice@example.org"], raw, timeout=300)
    assert tx.data is not None and tx.data.code == 250, tx
    event = scan_milter.transaction(queue_id(tx), key="queue_id")
    assert event["virus"] == {"found": None, "backend": event["virus"]["backend"]}
    assert event["spam"]["unscanned"] == "oversize"
    assert event["size"] > 30 * 1000 * 1000
    assert wait_for(lambda: stored_with(cyrus, "alice", subject.split()[-1].encode()), timeout=60)


BOUNDARY = b"=_b"
MALFORMED = {
    "unterminated-multipart": (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=_b"\r\n\r\n'
        b"--=_b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--=_b\r\n"
        b"Content-Type: text/plain\r\n\r\npart two, never closed\r\n"
    ),
    "broken-base64": (
        b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nQUJD!!!not*base64===\r\nZm9v\r\n"
    ),
    "broken-quoted-printable": (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nbad =ZZ escape =\r\n=4\r\n"
    ),
    "boundary-in-nested-garbage": (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative\r\n\r\n--\r\n--\r\n"
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_mime_gets_a_definite_reply(
    name: str, scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    subject = f"{name} {uuid.uuid4().hex}"
    head = headers(subject)
    raw = head + MALFORMED[name]
    assert_delivered_and_logged(
        send(postfix.address, SENDER, ["alice@example.org"], raw),
        scan_milter,
        cyrus,
        subject.encode(),
    )


def test_nul_bytes_are_refused_in_session_not_bounced(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    """Cyrus refuses NUL bytes; with delivery-confirmed acceptance the client hears it now,
    instead of a 250 followed by a bounce (backscatter) from Postfix's queue."""
    subject = f"nul {uuid.uuid4().hex}"
    raw = headers(subject) + b"Content-Type: text/plain\r\n\r\nbefore\x00after\x00\r\n"
    tx = send(postfix.address, SENDER, ["alice@example.org"], raw)
    assert tx.data is not None and tx.data.code == 554, tx
    assert tx.data.enhanced == "5.6.0"
    mid = re.search(rb"Message-ID: (<[^>]+>)", raw)
    assert mid
    event = scan_milter.transaction(mid.group(1).decode())
    assert event["action"] == "reject" and event["recipients"][0]["outcome"] == "rejected"
    assert postfix.queue_is_empty()
    assert not stored_with(cyrus, "alice", subject.split()[-1].encode())


def test_bare_lf_line_ends(scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus) -> None:
    subject = f"bare lf {uuid.uuid4().hex}"
    raw = headers(subject).replace(b"\r\n", b"\n") + b"\nline one\nline two\n"
    assert_delivered_and_logged(
        send(postfix.address, SENDER, ["alice@example.org"], raw),
        scan_milter,
        cyrus,
        subject.encode(),
    )


def test_spool_failure_is_a_tempfail_with_a_reason(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, tmp_path: Path
) -> None:
    """A body the milter cannot keep (spool_dir gone, disk full) is answered at end of data
    with our 451 and a logged reason, not a bare error in the middle of the body."""
    spool = tmp_path / "spool"
    spool.mkdir()
    scan_milter.ensure({"milter": {"spool_dir": str(spool), "spool_memory_limit": 0}})
    spool.rmdir()
    subject = f"unspoolable {uuid.uuid4().hex}"
    raw = headers(subject) + b"\r\n" + b"a body that has nowhere to go\r\n" * 100
    tx = send(postfix.address, SENDER, ["alice@example.org"], raw)
    assert tx.data is not None and (tx.data.code, tx.data.enhanced) == (451, "4.3.0"), tx
    mid = re.search(rb"Message-ID: (<[^>]+>)", raw)
    assert mid
    event = scan_milter.transaction(mid.group(1).decode())
    assert event["action"] == "tempfail" and event["reason"] == "spool write failed"
    assert "FileNotFoundError" in event["error"]
    assert postfix.queue_is_empty()
    assert not stored_with(cyrus, "alice", subject.split()[-1].encode())
