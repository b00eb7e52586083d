"""Owned headers, the rebuilt Received line, content-derived Message-IDs."""

from datetime import UTC, datetime

from milters.scan.headers import (
    ClientInfo,
    content_message_id,
    is_owned,
    no_autoreply,
    owned_deletions,
    received_header,
    render,
    render_as_received,
)


def test_owned_prefixes_any_case() -> None:
    for name in (
        "X-Spam-Flag",
        "x-spam-status",
        "X-SPAM-LEVEL",
        "X-Virus-Scanned",
        "X-Mailglue-Unscanned",
        "X-Spam-Report",
    ):
        assert is_owned(name)
    for name in ("Subject", "X-Spamish", "X-Mailer", "Received"):
        assert not is_owned(name)


def test_deletions_cover_every_copy_highest_index_first() -> None:
    headers = [
        ("X-Spam-Status", "Yes"),
        ("Subject", "s"),
        ("x-spam-status", "No"),
        ("X-Spam-Flag", "NO"),
        ("X-Spam-Status", "again"),
    ]
    assert owned_deletions(headers) == [
        ("X-Spam-Status", 3),
        ("x-spam-status", 2),
        ("X-Spam-Status", 1),
        ("X-Spam-Flag", 1),
    ]
    assert owned_deletions([("Subject", "x")]) == []


def test_received_header_like_postfix() -> None:
    when = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
    client = ClientInfo(addr="192.0.2.7", name="client.example", helo="helo.example")
    name, value = received_header(client, "mx.example.org", "4AbC", ["a@example.org"], when)
    assert name == "Received"
    assert value == (
        "from helo.example (client.example [192.0.2.7])\n\tby mx.example.org (Postfix) "
        "with ESMTP id 4AbC\n\tfor <a@example.org>; Fri, 27 Nov 2026 09:00:00 +0000 (UTC)"
    )
    tls_auth = ClientInfo(addr="1.2.3.4", tls="TLSv1.3", auth_user="alice")
    _, value = received_header(tls_auth, "mx", "Q", ["a", "b"], when)
    assert "with ESMTPSA id Q;" in value and "for " not in value


def test_render_uses_crlf_and_keeps_8bit_bytes() -> None:
    raw = "Grüße".encode().decode("utf-8", "surrogateescape")
    assert render([("Subject", raw), ("X", "a\n\tb")]) == (
        b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nX: a\r\n\tb\r\n"
    )
    latin1 = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert render([("Subject", latin1)]) == b"Subject: caf\xe9\r\n"


def test_received_headers_are_rendered_byte_for_byte() -> None:
    """Values as Postfix passes them with P_HDR_LEADSPC: no space added, none lost."""
    received = [("Subject", "Invoice"), ("To", "\tbob@x"), ("X", "  two\n\tfolded")]
    assert render_as_received(received) == (
        b"Subject:Invoice\r\nTo:\tbob@x\r\nX:  two\r\n\tfolded\r\n"
    )
    assert render([("X-Spam-Flag", "YES")]) == render_as_received([("X-Spam-Flag", " YES")])


def test_content_message_id_is_stable_and_ignores_our_headers() -> None:
    headers = [("From", "a@x"), ("Subject", "s")]
    first = content_message_id(headers, b"digest", "a@x", "mx.example.org")
    again = content_message_id(
        [*headers, ("X-Spam-Flag", "YES")], b"digest", "a@x", "mx.example.org"
    )
    assert first == again and first.endswith("@mx.example.org>") and first.startswith("<")
    assert content_message_id(headers, b"other", "a@x", "mx.example.org") != first


def test_tagged_inbound_spam_is_marked_for_autoresponders() -> None:
    assert no_autoreply(True, True, [("Subject", "hi")]) == [("Precedence", "junk")]


def test_no_precedence_for_clean_or_outgoing_mail_or_when_one_is_there() -> None:
    assert no_autoreply(False, True, []) == []  # clean
    assert no_autoreply(True, False, []) == []  # our user sending out: not ours to mark
    assert no_autoreply(True, True, [("precedence", "bulk")]) == []  # never two
