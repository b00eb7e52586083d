"""The verdict's boundaries, as a table (DESIGN.md: 3.0, 3.1, 4.9, 4.999, 5.0, -1.0, 1000)."""

from decimal import Decimal

import pytest

from milters.scan.verdict import (
    Action,
    Clean,
    Infected,
    SkipCause,
    SpamCheck,
    SpamScore,
    Unscanned,
    VerdictPolicy,
    VirusCheck,
    decide,
    for_our_user,
    format_score,
    stars,
)

DEFAULT = VerdictPolicy()


def score(text: str, *tests: tuple[str, str]) -> SpamScore:
    return SpamScore(Decimal(text), tuple((n, Decimal(s)) for n, s in tests))


def header(verdict_headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    values = [v for n, v in verdict_headers if n == name]
    assert len(values) <= 1, f"{name} added twice"
    return values[0] if values else None


@pytest.mark.parametrize(
    ("value", "action", "flag", "level", "status_start"),
    [
        ("-1.0", Action.ACCEPT, None, None, "No, score=-1.0 "),
        ("0", Action.ACCEPT, None, None, "No, score=0.0 "),
        ("2.999", Action.ACCEPT, None, None, "No, score=2.999 "),
        ("3.0", Action.ACCEPT, None, None, "No, score=3.0 "),
        ("3.001", Action.ACCEPT, "YES", "***", "Yes, score=3.001 "),
        ("3.1", Action.ACCEPT, "YES", "***", "Yes, score=3.1 "),
        ("3.9", Action.ACCEPT, "YES", "***", "Yes, score=3.9 "),
        ("4.0", Action.ACCEPT, "YES", "****", "Yes, score=4.0 "),
        ("4.9", Action.ACCEPT, "YES", "****", "Yes, score=4.9 "),
        ("4.999", Action.ACCEPT, "YES", "****", "Yes, score=4.999 "),
        ("5.0", Action.REJECT, None, None, None),
        ("1000", Action.REJECT, None, None, None),
    ],
)
def test_score_bands(
    value: str, action: Action, flag: str | None, level: str | None, status_start: str | None
) -> None:
    verdict = decide(Clean(), score(value), DEFAULT)
    assert verdict.action is action
    assert header(verdict.headers, "X-Spam-Flag") == flag
    assert header(verdict.headers, "X-Spam-Level") == level
    status = header(verdict.headers, "X-Spam-Status")
    if status_start is None:
        assert status is None
    else:
        assert status is not None and status.startswith(status_start)


def test_reject_reply_names_the_exact_score() -> None:
    verdict = decide(Clean(), score("5.0"), DEFAULT)
    assert str(verdict.reply) == "550 5.7.1 Message rejected as spam (score 5.0)"
    verdict = decide(Clean(), score("1000"), DEFAULT)
    assert str(verdict.reply) == "550 5.7.1 Message rejected as spam (score 1000.0)"


def test_status_lists_every_test_with_its_score() -> None:
    verdict = decide(Clean(), score("4.0", ("MG_A", "3.5"), ("MG_B", "0.5")), DEFAULT)
    assert header(verdict.headers, "X-Spam-Status") == (
        "Yes, score=4.0 required=3.0 tests=MG_A=3.5,MG_B=0.5"
    )
    verdict = decide(Clean(), score("0"), DEFAULT)
    assert header(verdict.headers, "X-Spam-Status") == "No, score=0.0 required=3.0 tests=none"


def test_virus_rejects_whole_whatever_the_score() -> None:
    verdict = decide(Infected("Eicar-Test-Signature"), score("-5"), DEFAULT)
    assert verdict.action is Action.REJECT
    assert str(verdict.reply) == "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)"
    assert verdict.headers == ()


def test_clean_virus_scan_is_marked() -> None:
    verdict = decide(Clean(), score("0"), DEFAULT)
    assert header(verdict.headers, "X-Virus-Scanned") == "clean (clamd)"


FAILED_SPAMD = Unscanned("spamd", SkipCause.FAILED, "connection refused")
FAILED_CLAMD = Unscanned("clamd", SkipCause.FAILED, "timed out")


def test_backend_failure_tempfails_by_default() -> None:
    cases: list[tuple[VirusCheck, SpamCheck]] = [
        (Clean(), FAILED_SPAMD),
        (FAILED_CLAMD, score("0")),
    ]
    for virus, spam in cases:
        verdict = decide(virus, spam, DEFAULT)
        assert verdict.action is Action.TEMPFAIL
        assert verdict.reply is not None and verdict.reply.code == 451
        assert verdict.reply.enhanced == "4.7.1"


def test_backend_failure_with_accept_policy_marks_the_message() -> None:
    policy = VerdictPolicy(spamd_on_failure="accept", clamd_on_failure="accept")
    verdict = decide(FAILED_CLAMD, FAILED_SPAMD, policy)
    assert verdict.action is Action.ACCEPT
    unscanned = [v for n, v in verdict.headers if n == "X-Mailglue-Unscanned"]
    assert unscanned == ["clamd: timed out", "spamd: connection refused"]
    assert header(verdict.headers, "X-Spam-Status") is None


def test_accepting_one_backend_does_not_accept_the_other() -> None:
    policy = VerdictPolicy(spamd_on_failure="accept")
    assert decide(FAILED_CLAMD, score("0"), policy).action is Action.TEMPFAIL


def test_spam_oversize_is_accepted_and_said() -> None:
    skipped = Unscanned("spamd", SkipCause.OVERSIZE, "not scored: too big")
    verdict = decide(Clean(), skipped, DEFAULT)
    assert verdict.action is Action.ACCEPT
    assert header(verdict.headers, "X-Mailglue-Unscanned") == "spamd: not scored: too big"


@pytest.mark.parametrize(
    ("policy", "action", "code"),
    [
        ("reject", Action.REJECT, 552),
        ("tempfail", Action.TEMPFAIL, 451),
        ("accept", Action.ACCEPT, None),
    ],
)
def test_clamd_oversize_policy(policy: str, action: Action, code: int | None) -> None:
    skipped = Unscanned("clamd", SkipCause.OVERSIZE, "size limit exceeded")
    verdict = decide(skipped, score("0"), VerdictPolicy(clamd_on_oversize=policy))
    assert verdict.action is action
    assert (verdict.reply.code if verdict.reply else None) == code


def test_configured_thresholds_are_used() -> None:
    policy = VerdictPolicy(tag_above=Decimal("6"), reject_at=Decimal("10"))
    assert decide(Clean(), score("7"), policy).action is Action.ACCEPT
    assert decide(Clean(), score("10"), policy).action is Action.REJECT
    assert header(decide(Clean(), score("6"), policy).headers, "X-Spam-Flag") is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("3", "3.0"),
        ("3.10", "3.1"),
        ("4.999", "4.999"),
        ("-0.001", "-0.001"),
        ("1000", "1000.0"),
        ("1E+3", "1000.0"),
    ],
)
def test_format_score(value: str, text: str) -> None:
    assert format_score(Decimal(value)) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.9", ""),
        ("1", "*"),
        ("3.1", "***"),
        ("3.9", "***"),
        ("4.0", "****"),
        ("-2", ""),
        ("1000", "*" * 50),
    ],
)
def test_stars(value: str, expected: str) -> None:
    assert stars(Decimal(value)) == expected


# --- refusals worded for our own users (outbound, after AUTH) -----------------------------------


def test_outbound_spam_refusal_says_not_sent_and_why() -> None:
    spam = SpamScore(
        Decimal("7.5"),
        (
            ("A_SMALL", Decimal("0.5")),
            ("BIG_ONE", Decimal("5")),
            ("MIDDLE", Decimal("2")),
            ("TRUSTED", Decimal("-1")),
        ),
    )
    verdict = decide(Clean(), spam, VerdictPolicy())
    worded = for_our_user(verdict, Clean(), spam, VerdictPolicy())
    assert worded.action is Action.REJECT and worded.reason == "spam"
    assert worded.reply is not None
    assert (worded.reply.code, worded.reply.enhanced) == (550, "5.7.1")
    assert worded.reply.text == (
        "Not sent: our spam filter scored your message 7.5 (refused from 5.0), "
        "mostly for BIG_ONE, MIDDLE, A_SMALL; change the text or ask postmaster"
    )


def test_outbound_virus_refusal_names_the_virus() -> None:
    spam = SpamScore(Decimal(0), ())
    virus = Infected("Eicar-Test-Signature")
    verdict = decide(virus, spam, VerdictPolicy())
    worded = for_our_user(verdict, virus, spam, VerdictPolicy())
    assert worded.reply is not None and worded.reply.code == 554
    assert worded.reply.text == "Not sent: virus found (Eicar-Test-Signature) in your message"


def test_outbound_accept_and_tempfail_are_unchanged() -> None:
    clean = SpamScore(Decimal("3.5"), ())
    accepted = decide(Clean(), clean, VerdictPolicy())
    assert for_our_user(accepted, Clean(), clean, VerdictPolicy()) is accepted
    down = Unscanned("spamd", SkipCause.FAILED, "refused")
    deferred = decide(Clean(), down, VerdictPolicy())
    assert for_our_user(deferred, Clean(), down, VerdictPolicy()) is deferred
