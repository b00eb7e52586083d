"""The policy request parser: every split of the input gives the same requests; bounds hold."""

from __future__ import annotations

import pytest

from milters.policy.protocol import ProtocolError, RequestParser, encode_reply

REQUEST = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"protocol_name=ESMTP\n"
    b"client_address=192.0.2.7\n"
    b"sender=alice@example.org\n"
    b"recipient=bob@example.org\n"
    b"queue_id=\n"
    b"sasl_username=\n"
    b"size=0\n"
    b"\n"
)
EXPECTED = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "ESMTP",
    "client_address": "192.0.2.7",
    "sender": "alice@example.org",
    "recipient": "bob@example.org",
    "queue_id": "",
    "sasl_username": "",
    "size": "0",
}


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[dict[str, str]]:
    parser = RequestParser()
    out: list[dict[str, str]] = []
    last = 0
    for cut in [*cuts, len(data)]:
        out += parser.feed(data[last:cut])
        last = cut
    assert not parser.has_partial
    return out


@pytest.mark.parametrize("cut", range(len(REQUEST) + 1))
def test_split_at_every_byte(cut: int) -> None:
    assert feed_in_pieces(REQUEST, [cut]) == [EXPECTED]


def test_two_requests_split_at_every_pair_of_points() -> None:
    data = REQUEST + REQUEST.replace(b"bob", b"carol")
    second = {**EXPECTED, "recipient": "carol@example.org"}
    step = 7  # every pair would be ~80k parses; a stride still crosses every line boundary kind
    for first in range(0, len(data) + 1, step):
        for other in range(first, len(data) + 1, step):
            assert feed_in_pieces(data, [first, other]) == [EXPECTED, second]


def test_one_byte_at_a_time() -> None:
    parser = RequestParser()
    out = []
    for i in range(len(REQUEST)):
        out += parser.feed(REQUEST[i : i + 1])
    assert out == [EXPECTED]


def test_value_may_contain_equals_and_crlf_is_tolerated() -> None:
    parser = RequestParser()
    assert parser.feed(b"a=b=c\r\nrequest=x\r\n\r\n") == [{"a": "b=c", "request": "x"}]


def test_utf8_value_and_invalid_bytes_do_not_crash() -> None:
    parser = RequestParser()
    (req,) = parser.feed("recipient=jörg@example.org\n".encode() + b"x=\xff\n\n")
    assert req["recipient"] == "jörg@example.org"
    assert req["x"] == "\ufffd"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\n", "empty request"),
        (b"no equals sign\n", "not a name=value"),
        (b"=value\n", "not a name=value"),
        (b"a=1\na=2\n\n", "given twice"),
        (b"a=\x00\n", "NUL"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    parser = RequestParser()
    with pytest.raises(ProtocolError, match=message):
        parser.feed(data)
    with pytest.raises(ProtocolError):  # stays broken
        parser.feed(b"request=x\n\n")


def test_oversized_request_without_newline_is_refused_before_buffering_more() -> None:
    parser = RequestParser(max_request_bytes=1024)
    with pytest.raises(ProtocolError, match="longer than 1024"):
        parser.feed(b"x=" + b"a" * 2000)


def test_oversized_request_across_many_lines() -> None:
    parser = RequestParser(max_request_bytes=1024)
    with pytest.raises(ProtocolError, match="longer than 1024"):
        for i in range(200):
            parser.feed(f"k{i}=0123456789\n".encode())


def test_request_of_exactly_the_limit_passes_and_the_count_restarts() -> None:
    line = b"k=" + b"v" * 1019 + b"\n"  # 1022 bytes + the empty line = 1023
    data = line + b"\n"
    parser = RequestParser(max_request_bytes=len(data))
    assert parser.feed(data + data) == [{"k": "v" * 1019}] * 2


def test_too_many_attributes() -> None:
    parser = RequestParser(max_attributes=10)
    data = b"".join(f"k{i}=v\n".encode() for i in range(11))
    with pytest.raises(ProtocolError, match="more than 10 attributes"):
        parser.feed(data)


def test_partial_state() -> None:
    parser = RequestParser()
    assert not parser.has_partial
    parser.feed(b"request=smtpd")
    assert parser.has_partial


def test_encode_reply() -> None:
    assert encode_reply("DUNNO") == b"action=DUNNO\n\n"
    assert encode_reply("550 5.1.1 <a@b>: no\r\naction=OK") == (
        b"action=550 5.1.1 <a@b>: no action=OK\n\n"
    )
