"""The scan memo: what makes two messages the same, what it keeps, for how long, how many;
and the scanner asking only the backends whose answer is not known yet."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest

from milters.scan.config import parse_config
from milters.scan.headers import ClientInfo
from milters.scan.memo import ScanMemo, scan_key
from milters.scan.scanner import Known, Scanner, ScanReport
from milters.scan.spool import Spool
from milters.scan.verdict import Clean, Infected, SkipCause, SpamScore, Unscanned

CLIENT = ClientInfo(addr="192.0.2.7", name="mx.example.net", helo="mx.example.net", tls="TLSv1.3")
HEADERS = [("Subject", "hello"), ("From", "bob@example.net")]
BODY = b"\x01" * 32
SCORE = SpamScore(Decimal("4.0"), (("X", Decimal("4.0")),))


def report(**kw: object) -> ScanReport:
    return ScanReport(**{"virus": Clean(), "spam": SCORE, **kw})  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_key_follows_what_the_results_depend_on() -> None:
    key = scan_key(CLIENT, "bob@example.net", HEADERS, BODY)
    assert key == scan_key(CLIENT, "bob@example.net", list(HEADERS), BODY)
    others = [
        scan_key(replace(CLIENT, addr="192.0.2.8"), "bob@example.net", HEADERS, BODY),
        scan_key(replace(CLIENT, auth_user="bob"), "bob@example.net", HEADERS, BODY),
        scan_key(CLIENT, "eve@example.net", HEADERS, BODY),
        scan_key(CLIENT, "bob@example.net", [*HEADERS, ("X-Extra", "1")], BODY),
        scan_key(CLIENT, "bob@example.net", HEADERS, b"\x02" * 32),
    ]
    assert key not in others and len(set(others)) == len(others)


def test_known_results_come_back_until_they_expire() -> None:
    clock = Clock()
    memo = ScanMemo(ttl=600, max_entries=10, clock=clock)
    memo.put("k", report(spamd_backend="inet:spamd", clamd_backend="unix:clamd"))
    assert memo.get("k") == Known(Clean(), "unix:clamd", SCORE, "inet:spamd")
    clock.now += 599
    assert memo.get("k") is not None
    clock.now += 1
    assert memo.get("k") is None and len(memo) == 0


def test_a_reused_result_keeps_its_first_expiry() -> None:
    clock = Clock()
    memo = ScanMemo(ttl=600, max_entries=10, clock=clock)
    memo.put("k", report())
    clock.now += 500
    memo.put("k", report(reused=True, cached=True))  # the retry used it: not a fresh scan
    clock.now += 100
    assert memo.get("k") is None


def test_the_oldest_go_first_beyond_the_limit() -> None:
    memo = ScanMemo(ttl=600, max_entries=2, clock=Clock())
    memo.put("a", report())
    memo.put("b", report())
    assert memo.get("a") is not None  # used: now the newest
    memo.put("c", report())
    assert memo.get("b") is None and memo.get("a") is not None and memo.get("c") is not None


@pytest.mark.parametrize(
    ("scanned", "known"),
    [
        (report(virus=Unscanned("clamd", SkipCause.FAILED, "down")), Known(None, "", SCORE, "")),
        (report(spam=Unscanned("spamd", SkipCause.OVERSIZE, "big")), Known(Clean(), "", None, "")),
        (report(spam_precise=False), Known(Clean(), "", None, "")),
        (report(virus=Infected("Eicar")), Known(Infected("Eicar"), "", SCORE, "")),
    ],
    ids=["clamd-failed", "spamd-skipped", "score-not-exact", "virus"],
)
def test_only_definite_results_are_kept(scanned: ScanReport, known: Known) -> None:
    memo = ScanMemo(ttl=600, max_entries=10, clock=Clock())
    memo.put("k", scanned)
    assert memo.get("k") == known


def test_nothing_definite_nothing_kept_and_ttl_0_keeps_nothing() -> None:
    memo = ScanMemo(ttl=600, max_entries=10, clock=Clock())
    memo.put("k", report(virus=Unscanned("clamd", SkipCause.FAILED, "x"), spam_precise=False))
    assert memo.get("k") is None
    off = ScanMemo(ttl=0, max_entries=10, clock=Clock())
    off.put("k", report())
    assert off.get("k") is None


# --- the scanner asks only for what is not known ---------------------------------------------


@pytest.fixture
def counting_scanner() -> Iterator[tuple[Scanner, list[str]]]:
    asked: list[str] = []
    scanner = Scanner(parse_config("m.yaml", {}), workers=2)

    def virus(prefix: bytes, spool: Spool, rep: ScanReport) -> Clean:
        asked.append("clamd")
        return Clean()

    def spam(prefix: bytes, spool: Spool, rep: ScanReport) -> SpamScore:
        asked.append("spamd")
        return SCORE

    scanner._virus = virus  # type: ignore[method-assign,assignment]
    scanner._spam = spam  # type: ignore[method-assign,assignment]
    yield scanner, asked
    scanner.shutdown()


@pytest.mark.parametrize(
    ("known", "asked", "cached"),
    [
        (None, ["clamd", "spamd"], False),
        (Known(None, "", SCORE, "inet:spamd"), ["clamd"], True),  # clamd failed last time
        (Known(Clean(), "unix:clamd", None, ""), ["spamd"], False),
        (Known(Clean(), "unix:clamd", SCORE, "inet:spamd"), [], True),
    ],
)
def test_the_scanner_asks_only_what_is_not_known(
    counting_scanner: tuple[Scanner, list[str]], known: Known | None, asked: list[str], cached: bool
) -> None:
    scanner, calls = counting_scanner
    spool = Spool(memory_limit=1 << 20)
    spool.write(b"hello\r\n")
    result = scanner.scan(b"Subject: x\r\n\r\n", spool, 1e12, lambda: None, known)
    assert sorted(calls) == sorted(asked)
    assert result.spam == SCORE and result.virus == Clean() and result.cached is cached
