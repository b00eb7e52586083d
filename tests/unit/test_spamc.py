"""SPAMC reply parsing: full-precision scores from the Mailglue-Tests header."""

from decimal import Decimal

import pytest

from milters.scanners.spamc import (
    SpamdError,
    build_request,
    parse_response,
    parse_tests,
    result_from_response,
    unfolded_header,
)

REPLY = (
    b"SPAMD/1.1 0 EX_OK\r\n"
    b"Content-length: 120\r\n"
    b"Spam: False ; 4.9 / 5.0\r\n"
    b"\r\n"
    b"Received: from x\r\n"
    b"X-Spam-Mailglue-Tests: MG_TEST_4_998=4.998,\r\n"
    b"\tNO_RELAYS=0\r\n"
    b"Subject: hi\r\n"
)


def test_score_is_the_exact_sum_not_the_truncated_spam_line() -> None:
    result = result_from_response(parse_response(REPLY), "inet:127.0.0.1:783")
    assert result.score == Decimal("4.998")
    assert result.tests == (("MG_TEST_4_998", Decimal("4.998")), ("NO_RELAYS", Decimal(0)))
    assert result.precise
    assert result.threshold == Decimal("5.0")


def test_without_the_header_the_spam_line_is_used_and_flagged_imprecise() -> None:
    reply = b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nSubject: x\r\n"
    result = result_from_response(parse_response(reply), "b")
    assert result.score == Decimal("1000.0") and not result.precise


def test_negative_scores_sum_to_three_decimals() -> None:
    body = b"X-Spam-Mailglue-Tests: A=-0.001,B=-0.001,C=1.1\r\n"
    reply = b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.0 / 5.0\r\n\r\n" + body
    assert result_from_response(parse_response(reply), "b").score == Decimal("1.098")


def test_error_replies_raise() -> None:
    with pytest.raises(SpamdError, match="76"):
        result_from_response(parse_response(b"SPAMD/1.0 76 Bad header line\r\n"), "b")
    with pytest.raises(SpamdError, match="not a SPAMD reply"):
        parse_response(b"HTTP/1.0 200 OK\r\n\r\n")
    with pytest.raises(SpamdError, match="Spam: line"):
        result_from_response(parse_response(b"SPAMD/1.1 0 EX_OK\r\n\r\n"), "b")


@pytest.mark.parametrize("value", ["A", "=1", "A=x"])
def test_bad_test_lists_raise(value: str) -> None:
    with pytest.raises(SpamdError):
        parse_tests(value)


def test_no_tests() -> None:
    assert parse_tests("none") == ()


def test_unfolded_header_stops_at_next_field() -> None:
    block = b"A: 1\r\nX-T: a,\r\n b\r\nX-T: second\r\n"
    assert unfolded_header(block, b"x-t") == b"a, b"
    assert unfolded_header(block, b"missing") is None


def test_request_header() -> None:
    assert build_request("HEADERS", 42, "mail") == (
        b"HEADERS SPAMC/1.5\r\nContent-length: 42\r\nUser: mail\r\n\r\n"
    )
