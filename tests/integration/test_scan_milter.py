"""The scan milter in front of a real Postfix, with real spamd, clamd and Cyrus.

Mail goes in over SMTP; what the client is told is asserted; what was stored is read back
over IMAP. Accepted mail reaches Cyrus through Postfix's queue and `lmtp:` transport.
"""

from __future__ import annotations

import contextlib
import email
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.harness.clamd import CLAM_ZIP, Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.messages import (
    EICAR,
    GTUBE,
    build_attachment_message,
    build_message,
    unique_message_id,
)
from tests.harness.milter import ScanMilter, wait_for
from tests.harness.postfix import Postfix
from tests.harness.process import refusing_port
from tests.harness.smtp import Transaction, send
from tests.harness.spamd import (
    RULE_3_0,
    RULE_3_1,
    RULE_4_0,
    RULE_4_9,
    RULE_4_999,
    RULE_5_0,
    TestRule,
)

SENDER = "bob@relay.test"


def fresh(token: str = "", **kwargs: Any) -> bytes:
    """A test message dated now: our Received line is dated now, and an old Date header would
    score DATE_IN_PAST_96_XX and blur the exact score bands."""
    return build_message(token, date=datetime.now(UTC), **kwargs)


def stored(cyrus: Cyrus, user: str, message_id: str, timeout: float = 20) -> Message | None:
    """The stored copy of a message in the user's INBOX, waiting for Postfix to deliver it."""

    def find() -> Message | None:
        for raw in cyrus.messages(user):
            parsed = email.message_from_bytes(raw)
            if parsed["Message-ID"] == message_id:
                return parsed
        return None

    found: Message | None = wait_for(find, timeout)
    return found


def absent(cyrus: Cyrus, user: str, message_id: str, postfix: Postfix) -> bool:
    """Nothing stored and nothing waiting in Postfix's queue for this message."""
    postfix.flush()
    if not postfix.queue_is_empty():
        return False
    return all(
        email.message_from_bytes(raw)["Message-ID"] != message_id for raw in cyrus.messages(user)
    )


def submit(postfix: Postfix, message: bytes, rcpts: list[str] | None = None) -> Transaction:
    return send(postfix.address, SENDER, rcpts or ["alice@example.org"], message)


def test_clean_message_is_delivered_with_spam_status_and_no_flag(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = submit(postfix, fresh(message_id=mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, "alice", mid)
    assert copy is not None
    assert copy.get_all("X-Spam-Status") == ["No, score=0.0 required=3.0 tests=none"]
    assert copy["X-Spam-Flag"] is None and copy["X-Spam-Level"] is None
    assert copy["X-Virus-Scanned"] == "clean (clamd)"
    event = scan_milter.transaction(mid)
    assert event["action"] == "delivered" and event["queue_id"]
    assert event["spam"]["precise"] is True
    assert event["virus"]["found"] is None
    assert set(event["timings_ms"]) >= {"clamd", "spamd", "total"}


def test_gtube_is_rejected_550_and_not_stored(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = submit(postfix, fresh(GTUBE, message_id=mid))
    assert tx.data is not None and tx.data.code == 550, tx
    assert tx.data.enhanced == "5.7.1"
    assert "Message rejected as spam (score 1000" in tx.data.text
    event = scan_milter.transaction(mid)
    assert event["action"] == "reject" and event["spam"]["tests"]["GTUBE"] == 1000
    assert event["reply"].startswith("550 5.7.1 Message rejected as spam")
    assert absent(cyrus, "alice", mid, postfix)


@pytest.mark.parametrize(
    ("message", "signature"),
    [
        (lambda mid: fresh(EICAR, message_id=mid), "Mailglue.Eicar.Body.UNOFFICIAL"),
        (
            lambda mid: build_attachment_message(
                "clam.zip", CLAM_ZIP.read_bytes(), subject=f"zip {mid}"
            ),
            "Mailglue.ClamExe",
        ),
    ],
    ids=["eicar-in-body", "clam.zip-attachment"],
)
def test_virus_is_rejected_554_naming_the_signature(
    scan_milter: ScanMilter, postfix: Postfix, message: object, signature: str
) -> None:
    mid = unique_message_id()
    raw = message(mid)  # type: ignore[operator]
    tx = submit(postfix, raw)
    assert tx.data is not None and tx.data.code == 554, tx
    assert tx.data.enhanced == "5.7.1"
    assert signature in tx.data.text
    assert postfix.queue_is_empty()


@pytest.mark.parametrize(
    ("rule", "flagged", "level"),
    [
        (RULE_3_0, False, None),
        (RULE_3_1, True, "***"),
        (RULE_4_0, True, "****"),
        (RULE_4_9, True, "****"),
        (RULE_4_999, True, "****"),  # spamd's own Spam: line would say 4.9
    ],
    ids=["3.0", "3.1", "4.0", "4.9", "4.999"],
)
def test_score_bands_below_reject(
    scan_milter: ScanMilter,
    postfix: Postfix,
    cyrus: Cyrus,
    rule: TestRule,
    flagged: bool,
    level: str | None,
) -> None:
    mid = unique_message_id()
    tx = submit(postfix, fresh(rule.token, message_id=mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, "alice", mid)
    assert copy is not None
    status = copy["X-Spam-Status"]
    assert status == (
        f"{'Yes' if flagged else 'No'}, score={rule.score} required=3.0 "
        f"tests={rule.name}={rule.score}"
    )
    assert copy["X-Spam-Flag"] == ("YES" if flagged else None)
    assert copy["X-Spam-Level"] == level
    assert copy["Precedence"] == ("junk" if flagged else None)


def test_score_5_0_is_rejected(scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus) -> None:
    mid = unique_message_id()
    tx = submit(postfix, fresh(RULE_5_0.token, message_id=mid))
    assert tx.data is not None and tx.data.code == 550, tx
    assert tx.data.text.endswith("Message rejected as spam (score 5.0)")
    assert absent(cyrus, "alice", mid, postfix)


def test_forged_spam_headers_are_replaced_by_ours(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    raw = fresh(
        RULE_4_0.token,
        message_id=mid,
        extra_headers={
            "X-Spam-Flag": "NO",
            "X-Spam-Status": "No, score=-50.0 required=5.0",
            "x-spam-status": "No, forged a second time",
            "X-Spam-Level": "",
            "X-Virus-Scanned": "clean (trust me)",
        },
    )
    tx = submit(postfix, raw)
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, "alice", mid)
    assert copy is not None
    assert copy.get_all("X-Spam-Flag") == ["YES"]
    assert copy.get_all("X-Spam-Status") == [
        f"Yes, score=4.0 required=3.0 tests={RULE_4_0.name}=4.0"
    ]
    assert copy.get_all("X-Spam-Level") == ["****"]
    assert copy.get_all("X-Virus-Scanned") == ["clean (clamd)"]


@pytest.fixture
def dead_backend() -> Iterator[str]:
    """Where nothing answers: "spamd is down"."""
    with refusing_port() as port:
        yield f"inet:127.0.0.1:{port}"


def test_spamd_down_tempfails_by_default(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, dead_backend: str
) -> None:
    scan_milter.ensure({"spam": {"backends": [dead_backend]}})
    mid = unique_message_id()
    tx = submit(postfix, fresh(message_id=mid))
    assert tx.data is not None and tx.data.code == 451, tx
    assert tx.data.enhanced == "4.7.1"
    event = scan_milter.transaction(mid)
    assert event["action"] == "tempfail" and "unreachable" in event["spam"]["reason"]
    assert absent(cyrus, "alice", mid, postfix)


def test_spamd_down_with_accept_policy_delivers_marked(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, dead_backend: str
) -> None:
    scan_milter.ensure({"spam": {"backends": [dead_backend], "on_failure": "accept"}})
    mid = unique_message_id()
    tx = submit(postfix, fresh(message_id=mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, "alice", mid)
    assert copy is not None
    assert copy["X-Mailglue-Unscanned"].startswith("spamd: unreachable")
    assert copy["X-Spam-Status"] is None


def test_clamd_stopped_tempfails_then_accept_policy_delivers_marked(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, clamd: Clamd
) -> None:
    clamd.stop()
    try:
        mid = unique_message_id()
        tx = submit(postfix, fresh(message_id=mid))
        assert tx.data is not None and tx.data.code == 451, tx
        assert absent(cyrus, "alice", mid, postfix)

        scan_milter.ensure({"virus": {"on_failure": "accept"}})
        mid = unique_message_id()
        tx = submit(postfix, fresh(message_id=mid))
        assert tx.data is not None and tx.data.code == 250, tx
        copy = stored(cyrus, "alice", mid)
        assert copy is not None
        assert copy["X-Mailglue-Unscanned"].startswith("clamd: unreachable")
        assert copy["X-Virus-Scanned"] is None
        assert copy["X-Spam-Status"].startswith("No, score=")
    finally:
        clamd.start()


def test_milter_down_means_451_never_a_pass(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    scan_milter.stop()
    mid = unique_message_id()
    tx = submit(postfix, fresh(GTUBE, message_id=mid))
    codes = [r.code for r in [tx.mail, *tx.rcpt.values(), *([tx.data] if tx.data else [])]]
    assert 451 in codes and 250 not in codes[-1:], tx
    assert absent(cyrus, "alice", mid, postfix)


def test_journal_is_jq_friendly(scan_milter: ScanMilter, postfix: Postfix) -> None:
    mid = unique_message_id()
    submit(postfix, fresh(GTUBE, message_id=mid))
    lines = Path(scan_milter.events_path).read_text().splitlines()
    assert all(line.startswith("{") and line.endswith("}") for line in lines)
    event = scan_milter.transaction(mid)
    for key in (
        "ts",
        "queue_id",
        "message_id",
        "client",
        "sender",
        "recipients",
        "size",
        "spam",
        "virus",
        "action",
        "reply",
        "timings_ms",
    ):
        assert key in event, key
    assert event["client"]["addr"] == "127.0.0.1"


class SilentBackend:
    """A backend that accepts connections and never answers: a hung spamd."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_hung_spamd_ends_at_the_time_budget_with_451(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    hung = SilentBackend()
    try:
        scan_milter.ensure(
            {
                "milter": {"time_budget": 3, "keepalive_interval": 1},
                "spam": {"backends": [f"inet:127.0.0.1:{hung.port}"], "timeout": 30},
            }
        )
        mid = unique_message_id()
        started = time.monotonic()
        tx = submit(postfix, fresh(message_id=mid))
        elapsed = time.monotonic() - started
    finally:
        hung.close()
    assert tx.data is not None and tx.data.code == 451, tx
    assert elapsed < 20, f"the budget did not bound the wait ({elapsed:.1f}s)"
    event = scan_milter.transaction(mid)
    assert event["spam"] == {"unscanned": "failed", "reason": "time budget exhausted"}
    assert absent(cyrus, "alice", mid, postfix)
