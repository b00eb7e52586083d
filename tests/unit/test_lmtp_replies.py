"""The reply parser: any chunking gives the same replies; garbage is refused, not guessed at."""

from __future__ import annotations

import pytest

from lmtp_bridge.replies import MalformedReply, Reply, ReplyParser

LHLO = (
    b"250-mail.example.org\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-PIPELINING\r\n250-SIZE\r\n250 IGNOREQUOTA\r\n"
)
STREAM = (
    b"220 mail.example.org LMTP Cyrus v3.6.1 ready\r\n"
    + LHLO
    + (b"250 2.1.0 ok\r\n550 5.1.1 User unknown\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
)


def feed_in(data: bytes, size: int) -> list[Reply]:
    parser = ReplyParser()
    out: list[Reply] = []
    for i in range(0, len(data), size):
        out += parser.feed(data[i : i + size])
    assert not parser.has_partial
    return out


def test_single_line_with_enhanced_code() -> None:
    (reply,) = ReplyParser().feed(b"550 5.1.1 User unknown\r\n")
    assert reply == Reply(550, "5.1.1", ("User unknown",))
    assert str(reply) == "550 5.1.1 User unknown"
    assert reply.is_permanent and not reply.is_transient and not reply.is_positive


def test_enhanced_code_only_on_the_last_line_as_cyrus_sends_it() -> None:
    raw = (
        b"550-Mailbox unknown.  Either there is no mailbox associated with this\r\n"
        b"550-name or you do not have authorization to see it.\r\n"
        b"550 5.1.1 User unknown\r\n"
    )
    (reply,) = ReplyParser().feed(raw)
    assert reply.enhanced == "5.1.1"
    assert reply.lines[-1] == "User unknown"
    assert str(reply).startswith("550 5.1.1 Mailbox unknown.  Either")
    assert str(reply).endswith("see it. User unknown")


def test_multiline_joins_text_and_keeps_lines() -> None:
    (reply,) = ReplyParser().feed(LHLO)
    assert reply.code == 250
    assert reply.enhanced is None
    assert reply.lines[0] == "mail.example.org"
    assert "PIPELINING" in reply.lines
    assert reply.text.startswith("mail.example.org 8BITMIME")


def test_enhanced_code_on_every_line_is_stripped_from_each() -> None:
    (reply,) = ReplyParser().feed(b"452-4.2.2 Over quota\r\n452 4.2.2 try later\r\n")
    assert reply.enhanced == "4.2.2"
    assert reply.lines == ("Over quota", "try later")
    assert str(reply) == "452 4.2.2 Over quota try later"
    assert reply.is_transient


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_any_chunking_gives_the_same_replies(size: int) -> None:
    expected = feed_in(STREAM, len(STREAM))
    assert len(expected) == 6
    assert feed_in(STREAM, size) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"250\r\n", Reply(250, None, ("",))),
        (b"250 \r\n", Reply(250, None, ("",))),
        (b"250 2.0.0\r\n", Reply(250, "2.0.0", ("",))),
        (b"250 ok\n", Reply(250, None, ("ok",))),  # bare LF tolerated on input
        (b"451 2.0.0 odd\r\n", Reply(451, None, ("2.0.0 odd",))),  # class mismatch: plain text
        (b"250 2.1.5ok\r\n", Reply(250, None, ("2.1.5ok",))),
        (b"250 caf\xc3\xa9\r\n", Reply(250, None, ("caf\u00e9",))),
        (b"554 \xff\r\n", Reply(554, None, ("\ufffd",))),
    ],
)
def test_edge_lines(raw: bytes, expected: Reply) -> None:
    assert ReplyParser().feed(raw) == [expected]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"hello\r\n", "not an SMTP reply"),
        (b"25 x\r\n", "not an SMTP reply"),
        (b"650 x\r\n", "not an SMTP reply"),
        (b"250x\r\n", "not an SMTP reply"),
        (b"\r\n", "not an SMTP reply"),
        (b"250-a\r\n251 b\r\n", "changed from 250 to 251"),
        (b"250 a\rb\r\n", "bare CR"),
    ],
)
def test_malformed_lines_raise(raw: bytes, needle: str) -> None:
    with pytest.raises(MalformedReply, match=needle):
        ReplyParser().feed(raw)


def test_parser_stays_broken_after_an_error() -> None:
    parser = ReplyParser()
    with pytest.raises(MalformedReply):
        parser.feed(b"junk\r\n")
    with pytest.raises(MalformedReply):
        parser.feed(b"250 ok\r\n")


def test_line_length_is_bounded_even_without_newline() -> None:
    parser = ReplyParser(max_line_length=100)
    parser.feed(b"250 " + b"x" * 96)
    with pytest.raises(MalformedReply, match="longer than 100"):
        parser.feed(b"x")


def test_line_count_is_bounded() -> None:
    parser = ReplyParser(max_lines=3)
    with pytest.raises(MalformedReply, match="longer than 3 lines"):
        parser.feed(b"250-a\r\n" * 4)


def test_close_mid_reply_is_an_error() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n250 sec")
    assert parser.has_partial
    with pytest.raises(MalformedReply, match="middle of a reply"):
        parser.close()


def test_close_when_idle_is_fine() -> None:
    parser = ReplyParser()
    parser.feed(b"221 bye\r\n")
    parser.close()


def test_reply_value_checks() -> None:
    with pytest.raises(ValueError):
        Reply(199)
    with pytest.raises(ValueError):
        Reply(451, "5.1.1")
    with pytest.raises(ValueError):
        Reply(250, None, ("a\r\nMAIL FROM:<x>",))
    assert str(Reply.make(451, "4.4.1", "try later")) == "451 4.4.1 try later"
    assert str(Reply(250)) == "250"
    assert Reply(354).is_positive
