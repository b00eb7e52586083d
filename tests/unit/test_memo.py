"""The scan memo: what makes two messages the same, how long and how many it keeps."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from milters.scan.headers import ClientInfo
from milters.scan.memo import ScanMemo, scan_key
from milters.scan.scanner import ScanReport
from milters.scan.verdict import Clean, SkipCause, SpamScore, Unscanned

CLIENT = ClientInfo(addr="192.0.2.7", name="mx.example.net", helo="mx.example.net", tls="TLSv1.3")
HEADERS = [("Subject", "hello"), ("From", "bob@example.net")]
BODY = b"\x01" * 32


def report(score: str = "4.0") -> ScanReport:
    return ScanReport(Clean(), SpamScore(Decimal(score), (("X", Decimal(score)),)))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_key_follows_what_the_scores_depend_on() -> None:
    key = scan_key(CLIENT, "bob@example.net", HEADERS, BODY)
    assert key == scan_key(CLIENT, "bob@example.net", list(HEADERS), BODY)
    others = [
        scan_key(
            ClientInfo(addr="192.0.2.8", helo="mx.example.net"), "bob@example.net", HEADERS, BODY
        ),
        scan_key(CLIENT, "eve@example.net", HEADERS, BODY),
        scan_key(CLIENT, "bob@example.net", [*HEADERS, ("X-Extra", "1")], BODY),
        scan_key(CLIENT, "bob@example.net", HEADERS, b"\x02" * 32),
        scan_key(
            replace(CLIENT, auth_user="bob"),
            "bob@example.net",
            HEADERS,
            BODY,
        ),
    ]
    assert key not in others and len(set(others)) == len(others)


def test_a_remembered_report_comes_back_marked_until_it_expires() -> None:
    clock = Clock()
    memo = ScanMemo(ttl=600, max_entries=10, clock=clock)
    memo.put("k", report())
    found = memo.get("k")
    assert found is not None and found.cached and found.spam == report().spam
    assert found.timings_ms == {}
    clock.now += 599
    assert memo.get("k") is not None
    clock.now += 1
    assert memo.get("k") is None and len(memo) == 0


def test_the_oldest_go_first_beyond_the_limit() -> None:
    memo = ScanMemo(ttl=600, max_entries=2, clock=Clock())
    memo.put("a", report())
    memo.put("b", report())
    assert memo.get("a") is not None  # used: now the newest
    memo.put("c", report())
    assert memo.get("b") is None and memo.get("a") is not None and memo.get("c") is not None


@pytest.mark.parametrize(
    "uncertain",
    [
        ScanReport(Unscanned("clamd", SkipCause.FAILED, "down"), SpamScore(Decimal(1), ())),
        ScanReport(Clean(), Unscanned("spamd", SkipCause.OVERSIZE, "big")),
        ScanReport(Clean(), SpamScore(Decimal(1), ()), spam_precise=False),
    ],
)
def test_only_definite_results_are_kept(uncertain: ScanReport) -> None:
    memo = ScanMemo(ttl=600, max_entries=10, clock=Clock())
    memo.put("k", uncertain)
    assert memo.get("k") is None


def test_ttl_0_keeps_nothing() -> None:
    memo = ScanMemo(ttl=0, max_entries=10, clock=Clock())
    memo.put("k", report())
    assert memo.get("k") is None
