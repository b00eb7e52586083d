"""The scan milter's callback flow under pymilter's TestCtx, with the scanner stood in for.

Real spamd/clamd/Postfix are exercised in tests/integration; here we pin down what the
pymilter shell does with a given scan result: which headers it deletes and adds, which
reply it sets, and that a bug inside end-of-message becomes a 451, never a pass.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import Milter
from Milter.testctx import TestCtx

from milters.common.jsonlog import EventLog
from milters.scan.config import parse_config
from milters.scan.scanner import Known, ScanReport
from milters.scan.service import MilterService
from milters.scan.session import ScanMilter
from milters.scan.spool import Spool
from milters.scan.verdict import Clean, Infected, SkipCause, SpamScore, Unscanned

TestCtx.__test__ = False  # pymilter's class, not a test
NO_REPLY_STEPS = (
    Milter.P_NR_CONN
    | Milter.P_NR_HELO
    | Milter.P_NR_MAIL
    | Milter.P_NR_RCPT
    | Milter.P_NR_HDR
    | Milter.P_NR_BODY
)

MESSAGE = (
    b"From: bob@example.net\n"
    b"To: alice@example.org\n"
    b"Subject: hello\n"
    b"Message-ID: <m1@example.net>\n"
    b"X-Spam-Flag: NO\n"
    b"X-Spam-Status: No, score=-100\n"
    b"x-spam-status: forged twice\n"
    b"\n"
    b"Body text.\n"
)


class RecordingCtx(TestCtx):  # type: ignore[misc]
    """TestCtx deletes on '' but libmilter (and Postfix) delete on None: record both."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, int, str | None]] = []
        self.added: list[tuple[str, str]] = []
        self.progress_calls = 0

    def _negotiate(self) -> int:
        """Keep what the milter negotiated, then answer every callback as Postfix sees it.

        TestCtx stops at a NOREPLY answer; Postfix does not wait for one and goes on.
        """
        rc: int = super()._negotiate()
        self.negotiated: int = self._protocol
        self._priv._protocol &= ~NO_REPLY_STEPS
        return rc

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        self.changes.append((field, idx, value))

    def _header(self, fld: str, val: str) -> int:
        """Postfix with P_HDR_LEADSPC passes what follows the colon; the parser TestCtx uses
        strips the space, so put it back (these test messages have one after every colon)."""
        if self.negotiated & Milter.P_HDR_LEADSPC:
            val = " " + val
        rc: int = super()._header(fld, val)
        return rc

    def addheader(self, field: str, value: str, idx: int) -> None:
        """Recorded as `value` after the `Name: `; with P_HDR_LEADSPC Postfix adds no space."""
        if self.negotiated & Milter.P_HDR_LEADSPC:
            assert value[:1] == " ", f"{field}:{value} would be written without a space"
            value = value[1:]
        self.added.append((field, value))

    def progress(self) -> None:
        self.progress_calls += 1


class StubScanner:
    """Answers with `make_report()`; like the real one, takes spamd's result from `known`."""

    def __init__(self, make_report: Callable[[], ScanReport]) -> None:
        self.make_report = make_report
        self.prefixes: list[bytes] = []
        self.spamd_asked = 0

    def scan(
        self,
        prefix: bytes,
        spool: Spool,
        deadline: float,
        keepalive: Callable[[], None],
        known: Known | None = None,
    ) -> ScanReport:
        self.prefixes.append(prefix)
        keepalive()
        report = self.make_report()
        if known is not None and known.spam is not None:
            report.spam, report.cached, report.reused = known.spam, True, True
        else:
            self.spamd_asked += 1
        return report


# The client (192.0.2.7) is not trusted; SPF/DKIM/DMARC are tested against a real name
# server in tests/integration/test_sender_auth.py, and these tests ask no DNS.
NO_DNS = {"enabled": False}


def run(
    make_report: Callable[[], ScanReport], login: str | None = None, **config: Any
) -> tuple[RecordingCtx, int, list[dict[str, Any]], StubScanner]:
    out = io.StringIO()
    scanner = StubScanner(make_report)
    config = {"auth": NO_DNS, **config}
    service = MilterService(parse_config("test.yaml", config), scanner, EventLog(stream=out))  # type: ignore[arg-type]
    ctx, result = feed(service, login)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    return ctx, result, events, scanner


def feed(
    service: MilterService, login: str | None = None, message: bytes = MESSAGE
) -> tuple[RecordingCtx, int]:
    """One SMTP session with one message, as Postfix drives the milter."""
    ctx = RecordingCtx()
    if login is not None:
        ctx._setsymval("{auth_authen}", login)  # Postfix's macro after SMTP AUTH
    Milter.factory = lambda: ScanMilter(service)
    assert ctx._connect(host="client.example", helo="helo.example", ip="192.0.2.7") == (
        Milter.CONTINUE
    )
    result = ctx._feedFile(io.BytesIO(message), "bob@example.net", "alice@example.org")
    return ctx, result


def clean_report(score: str = "0.5") -> ScanReport:
    return ScanReport(Clean(), SpamScore(Decimal(score), (("MG", Decimal(score)),)))


def test_accept_removes_every_forged_copy_and_adds_ours() -> None:
    ctx, result, events, _ = run(lambda: clean_report("4.0"))
    assert result == Milter.ACCEPT
    deleted = sorted((name.lower(), idx) for name, idx, value in ctx.changes if value is None)
    assert deleted == [("x-spam-flag", 1), ("x-spam-status", 1), ("x-spam-status", 2)]
    assert ctx.added == [
        ("X-Virus-Scanned", "clean (clamd)"),
        ("X-Spam-Status", "Yes, score=4.0 required=3.0 tests=MG=4.0"),
        ("X-Spam-Flag", "YES"),
        ("X-Spam-Level", "****"),
        ("Precedence", "junk"),  # so no out-of-office rule answers it
    ]
    assert ctx.progress_calls == 1
    (event,) = events
    assert event["event"] == "transaction" and event["action"] == "accept"
    assert event["spam"]["score"] == 4.0 and event["message_id"] == "<m1@example.net>"
    assert event["sender"] == "bob@example.net"
    assert event["recipients"] == [{"address": "alice@example.org"}]


def test_postfix_need_not_wait_for_the_collecting_callbacks() -> None:
    """One round trip per header, recipient and body chunk saved; eom still answers."""
    ctx, result, _, _ = run(clean_report)
    assert ctx.negotiated & NO_REPLY_STEPS == NO_REPLY_STEPS
    assert not ctx.negotiated & (Milter.P_NOHDRS | Milter.P_NOBODY | Milter.P_NORCPT)
    assert ctx.negotiated & Milter.P_HDR_LEADSPC  # header values exactly as sent
    assert result == Milter.ACCEPT


def test_scanned_copy_has_a_received_line_and_no_forged_headers() -> None:
    _, _, _, scanner = run(clean_report)
    (prefix,) = scanner.prefixes
    assert prefix.startswith(b"Received: from helo.example (client.example [192.0.2.7])\r\n")
    assert b"X-Spam" not in prefix and b"x-spam" not in prefix
    assert prefix.endswith(b"Message-ID: <m1@example.net>\r\n\r\n")


def test_spam_is_rejected_with_the_score() -> None:
    ctx, result, events, _ = run(lambda: clean_report("1000"))
    assert result == Milter.REJECT
    assert ctx._reply == ("550", "5.7.1", "Message rejected as spam (score 1000.0)")
    assert ctx.added == [] and ctx.changes == []
    assert events[-1]["reply"] == "550 5.7.1 Message rejected as spam (score 1000.0)"


def test_inbound_and_outbound_are_told_apart() -> None:
    _, _, inbound, _ = run(clean_report)
    _, _, outbound, _ = run(clean_report, login="bob")
    assert inbound[-1]["direction"] == "inbound"
    assert outbound[-1]["direction"] == "outbound"
    assert outbound[-1]["client"]["sasl_user"] == "bob"


def test_outgoing_tagged_mail_is_not_marked_precedence_junk() -> None:
    ctx, result, _, _ = run(lambda: clean_report("4.0"), login="bob")
    assert result == Milter.ACCEPT
    assert ("X-Spam-Flag", "YES") in ctx.added
    assert not [name for name, _ in ctx.added if name.lower() == "precedence"]


def test_outbound_spam_refusal_tells_the_member_why() -> None:
    ctx, result, events, _ = run(lambda: clean_report("1000"), login="bob")
    assert result == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.7.1")
    assert ctx._reply[2].startswith("Not sent: our spam filter scored your message 1000.0")
    assert events[-1]["reply"].startswith("550 5.7.1 Not sent:")


def test_virus_reply_escapes_percent_for_libmilter() -> None:
    ctx, result, _, _ = run(lambda: ScanReport(Infected("Odd%Name"), SpamScore(Decimal(0), ())))
    assert result == Milter.REJECT
    assert ctx._reply == ("554", "5.7.1", "Message rejected: virus found (Odd%%Name)")


def test_backend_down_tempfails() -> None:
    down = Unscanned("spamd", SkipCause.FAILED, "connection refused")
    ctx, result, events, _ = run(lambda: ScanReport(Clean(), down))
    assert result == Milter.TEMPFAIL
    assert ctx._reply[0] == "451"
    assert events[-1]["spam"] == {"unscanned": "failed", "reason": "connection refused"}


def test_a_bug_in_the_filter_tempfails_and_is_logged() -> None:
    def broken() -> ScanReport:
        raise RuntimeError("boom")

    ctx, result, events, _ = run(broken)
    assert result == Milter.TEMPFAIL
    assert ctx._reply == (
        "451",
        "4.3.0",
        "Temporary error in the mail filter, please try again later",
    )
    assert events[-1]["error"] == "RuntimeError: boom" and events[-1]["action"] == "tempfail"


# --- the scan memo: the same message is not scanned twice ----------------------------------


def memo_service(**spam: Any) -> tuple[MilterService, StubScanner, io.StringIO]:
    out = io.StringIO()
    scanner = StubScanner(lambda: clean_report("4.0"))
    config = parse_config("test.yaml", {"auth": NO_DNS, **({"spam": spam} if spam else {})})
    return MilterService(config, scanner, EventLog(stream=out)), scanner, out  # type: ignore[arg-type]


def transactions(out: io.StringIO) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    return [e for e in events if e["event"] == "transaction"]


def test_a_retry_of_the_same_message_reuses_the_scan() -> None:
    service, scanner, out = memo_service()
    first, _ = feed(service)
    second, _ = feed(service)  # e.g. the sender's retry after our 451
    assert scanner.spamd_asked == 1
    one, two = transactions(out)
    assert "cached" not in one["spam"] and two["spam"]["cached"] is True
    assert two["spam"]["score"] == one["spam"]["score"] == 4.0
    assert second.added == first.added  # the same headers and verdict


def test_other_content_or_another_client_is_scanned() -> None:
    service, scanner, _ = memo_service()
    feed(service)
    feed(service, message=MESSAGE.replace(b"Subject:", b"Subject: changed"))
    feed(service, login="bob")  # the same text sent by a logged-in member
    assert scanner.spamd_asked == 3


def test_memo_ttl_0_scans_every_time() -> None:
    service, scanner, _ = memo_service(memo_ttl=0)
    feed(service)
    feed(service)
    assert scanner.spamd_asked == 2
