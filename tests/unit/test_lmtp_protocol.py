"""Sans-IO LMTP: commands, body encoding, and the replies-to-recipients bookkeeping."""

from __future__ import annotations

import random
import re

import pytest

from lmtp_bridge.address import (
    BackendAddressError,
    InetAddress,
    UnixAddress,
    parse_backend_address,
)
from lmtp_bridge.body import BodyEncoder, encode_body, has_8bit
from lmtp_bridge.protocol import (
    DATA,
    Capabilities,
    Envelope,
    MailAddressError,
    Phase,
    RecipientReply,
    Stage,
    Transaction,
    lhlo_command,
    mail_command,
    quote_address,
    rcpt_command,
)
from lmtp_bridge.replies import Reply, ReplyParser

CYRUS_LHLO = (
    b"250-mail.example.org\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-PIPELINING\r\n250-SIZE\r\n250-AUTH EXTERNAL\r\n250 IGNOREQUOTA\r\n"
)
OK = Reply(250, "2.1.5", ("Ok",))
GO = Reply(354, None, ("go ahead",))
UNKNOWN = Reply(550, "5.1.1", ("User unknown",))
QUOTA = Reply(452, "4.2.2", ("Over quota",))


def caps(*keywords: str) -> Capabilities:
    return Capabilities("test", {k: "" for k in keywords})


# --- addresses and commands -------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\r\n@x", "a\n@x", "a\r@x", "a\0@x", "<a@x>", "a>@x", "a<@x"])
def test_addresses_that_could_inject_are_refused(bad: str) -> None:
    with pytest.raises(MailAddressError):
        quote_address(bad)
    with pytest.raises(MailAddressError):
        rcpt_command(bad)


def test_address_quoting() -> None:
    assert quote_address("alice@example.org") == "<alice@example.org>"
    assert quote_address("", allow_empty=True) == "<>"
    with pytest.raises(MailAddressError, match="only the sender"):
        quote_address("")
    with pytest.raises(MailAddressError, match="whitespace"):
        quote_address(" alice@example.org")


def test_envelope_validates_everything_before_io() -> None:
    with pytest.raises(MailAddressError):
        Envelope("a@x\r\nRSET", ("b@x",))
    with pytest.raises(MailAddressError):
        Envelope("a@x", ("b@x", "c@x>"))
    with pytest.raises(ValueError, match="at least one"):
        Envelope("a@x", ())
    with pytest.raises(ValueError, match="duplicate"):
        Envelope("a@x", ("b@x", "b@x"))
    Envelope("", ("b@x",))  # the null sender is fine


def test_lhlo_command() -> None:
    assert lhlo_command("mx1.example.org") == b"LHLO mx1.example.org\r\n"
    for bad in ["", "a b", "a\r\nMAIL", "a\tb"]:
        with pytest.raises(ValueError):
            lhlo_command(bad)


def test_capabilities_from_cyrus_lhlo() -> None:
    (reply,) = ReplyParser().feed(CYRUS_LHLO)
    c = Capabilities.from_lhlo(reply)
    assert c.greeting == "mail.example.org"
    assert c.pipelining and c.eightbitmime and not c.smtputf8
    assert c.size == 0
    assert c.keywords["AUTH"] == "EXTERNAL"
    assert Capabilities.from_lhlo(Reply(250, None, ("x", "size 1000"))).size == 1000
    assert Capabilities.from_lhlo(Reply(250, None, ("x",))).size is None


@pytest.mark.parametrize(
    ("offered", "size", "eight_bit", "expected"),
    [
        ((), 100, True, b"MAIL FROM:<a@x>\r\n"),
        (("SIZE",), 100, False, b"MAIL FROM:<a@x> SIZE=100\r\n"),
        (("SIZE",), None, False, b"MAIL FROM:<a@x>\r\n"),
        (("8BITMIME",), None, False, b"MAIL FROM:<a@x>\r\n"),
        (("8BITMIME",), None, True, b"MAIL FROM:<a@x> BODY=8BITMIME\r\n"),
        (("SIZE", "8BITMIME"), 7, True, b"MAIL FROM:<a@x> SIZE=7 BODY=8BITMIME\r\n"),
    ],
)
def test_mail_parameters_only_where_offered(
    offered: tuple[str, ...], size: int | None, eight_bit: bool, expected: bytes
) -> None:
    assert mail_command(Envelope("a@x", ("b@x",), size, eight_bit), caps(*offered)) == expected


def test_null_sender_and_smtputf8() -> None:
    assert mail_command(Envelope("", ("b@x",)), caps()) == b"MAIL FROM:<>\r\n"
    env = Envelope("", ("j\u00fcrgen@x",))
    assert mail_command(env, caps("SMTPUTF8")) == b"MAIL FROM:<> SMTPUTF8\r\n"
    assert rcpt_command("j\u00fcrgen@x") == "RCPT TO:<j\u00fcrgen@x>\r\n".encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/cyrus/socket/lmtp", UnixAddress("/run/cyrus/socket/lmtp")),
        ("lmtp:unix:/run/lmtp", UnixAddress("/run/lmtp")),
        ("unix:private/lmtp", UnixAddress("private/lmtp")),
        ("inet:127.0.0.1:24", InetAddress("127.0.0.1", 24)),
        ("lmtp:inet:mail2.example.org:2003", InetAddress("mail2.example.org", 2003)),
        ("inet:[::1]:24", InetAddress("::1", 24)),
        (" inet:localhost:24 ", InetAddress("localhost", 24)),
    ],
)
def test_backend_addresses(text: str, expected: object) -> None:
    address = parse_backend_address(text)
    assert address == expected
    assert parse_backend_address(str(address)) == address


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("/run/lmtp", "no type prefix"),
        ("tcp:host:24", "unknown type 'tcp'"),
        ("unix:", "socket path"),
        ("inet:host", "no port"),
        ("inet::24", "invalid host"),
        ("inet:host:lmtp", "port must be a number"),
        ("inet:host:0", "port must be a number"),
        ("inet:host:65536", "port must be a number"),
        ("inet:::1:24", "IPv6 addresses need brackets"),
        ("inet:[::1]24", "no ':port'"),
    ],
)
def test_bad_backend_addresses_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(BackendAddressError, match=re.escape(needle)):
        parse_backend_address(text)


# --- body encoding ------------------------------------------------------------------------


def reference_wire(message: bytes) -> bytes:
    """Line-by-line restatement of the body policy, independent of the chunked encoder."""
    lines = [line.replace(b"\r", b"") for line in re.split(rb"\r?\n", message)]
    if lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
    return body + b".\r\n"


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n..b\n", b"a\r\n...b\r\n.\r\n"),
        (b"a\r.\rb\r\n", b"a.b\r\n.\r\n"),  # bare CRs dropped: no \r.\r smuggling
        (b"a\n.\n", b"a\r\n..\r\n.\r\n"),  # \n.\n is stuffed, not an end of data
        (b"Subject: x\r\r\nbody\r\n", b"Subject: x\r\nbody\r\n.\r\n"),
        (b"tail\r", b"tail\r\n.\r\n"),
        (b"\x00\xff\xc3\xa9\r\n", b"\x00\xff\xc3\xa9\r\n.\r\n"),
    ],
)
def test_body_encoding(message: bytes, wire: bytes) -> None:
    assert encode_body(message) == wire
    assert reference_wire(message) == wire


def test_chunk_boundaries_never_change_the_wire() -> None:
    rnd = random.Random(2033)
    alphabet = [b"a", b".", b"\r", b"\n", b"\r\n", b"\xe9"]
    for _ in range(400):
        message = b"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 40)))
        enc = BodyEncoder()
        out = b""
        pos = 0
        while pos < len(message):
            step = rnd.randrange(1, 6)
            out += enc.feed(message[pos : pos + step])
            pos += step
        out += enc.finish()
        assert out == reference_wire(message), message
        assert out == encode_body(message)


def test_wire_form_has_no_bare_cr_or_lf() -> None:
    wire = encode_body(b"x\ry\nz\r\r\n\n\r.\r\n")
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")


def test_encoder_misuse() -> None:
    enc = BodyEncoder()
    enc.finish()
    with pytest.raises(RuntimeError):
        enc.feed(b"x")
    with pytest.raises(RuntimeError):
        enc.finish()


def test_has_8bit() -> None:
    assert not has_8bit(b"plain\r\n")
    assert has_8bit(b"caf\xc3\xa9")


# --- the transaction state machine --------------------------------------------------------


def phase(tx: Transaction) -> Phase:
    """Read the phase afresh (mypy would keep an earlier narrowing of `tx.phase`)."""
    return tx.phase


def run(tx: Transaction, replies: list[Reply]) -> list[bytes]:
    """Drive the envelope phase the way the client does; return every batch sent."""
    sent = [tx.start()]
    it = iter(replies)
    while tx.phase is Phase.ENVELOPE:
        out = tx.feed(next(it))
        if out:
            sent.append(out)
    return sent


def test_pipelined_sends_everything_at_once() -> None:
    tx = Transaction(Envelope("s@x", ("a@x", "b@x"), 10), caps("PIPELINING", "SIZE"))
    sent = run(tx, [OK, OK, OK, GO])
    assert sent == [b"MAIL FROM:<s@x> SIZE=10\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"]
    assert tx.phase is Phase.BODY
    assert tx.accepted == ("a@x", "b@x")
    tx.body_sent()
    assert tx.awaiting == 2
    tx.feed(OK)
    tx.feed(QUOTA)
    assert phase(tx) is Phase.DONE
    assert tx.result == {
        "a@x": RecipientReply(Stage.FINAL, OK),
        "b@x": RecipientReply(Stage.FINAL, QUOTA),
    }
    assert not tx.needs_reset


def test_lockstep_sends_one_command_per_reply() -> None:
    tx = Transaction(Envelope("", ("a@x", "b@x")), caps())
    sent = run(tx, [OK, OK, OK, GO])
    assert sent == [b"MAIL FROM:<>\r\n", b"RCPT TO:<a@x>\r\n", b"RCPT TO:<b@x>\r\n", DATA]
    assert tx.phase is Phase.BODY


@pytest.mark.parametrize("offered", [(), ("PIPELINING",)])
def test_data_replies_go_only_to_recipients_accepted_at_rcpt(offered: tuple[str, ...]) -> None:
    tx = Transaction(Envelope("s@x", ("a@x", "nobody@x", "c@x")), caps(*offered))
    run(tx, [OK, OK, UNKNOWN, OK, GO])
    assert tx.accepted == ("a@x", "c@x")
    assert tx.decided == {"nobody@x": RecipientReply(Stage.RCPT, UNKNOWN)}
    tx.body_sent()
    tx.feed(QUOTA)
    assert tx.decided["a@x"] == RecipientReply(Stage.FINAL, QUOTA)
    tx.feed(OK)
    result = tx.result
    assert list(result) == ["a@x", "nobody@x", "c@x"]  # envelope order
    assert result["c@x"] == RecipientReply(Stage.FINAL, OK)
    assert result["nobody@x"].stage is Stage.RCPT


def test_lockstep_all_refused_sends_no_data() -> None:
    tx = Transaction(Envelope("s@x", ("a@x", "b@x")), caps())
    sent = run(tx, [OK, UNKNOWN, UNKNOWN])
    assert DATA not in sent
    assert tx.phase is Phase.DONE
    assert tx.needs_reset
    assert {r.stage for r in tx.result.values()} == {Stage.RCPT}


def test_pipelined_all_refused_consumes_the_data_refusal() -> None:
    tx = Transaction(Envelope("s@x", ("a@x",)), caps("PIPELINING"))
    run(tx, [OK, UNKNOWN, Reply(503, "5.5.1", ("No recipients",))])
    assert tx.phase is Phase.DONE and tx.awaiting == 0
    assert tx.result["a@x"] == RecipientReply(Stage.RCPT, UNKNOWN)
    assert tx.needs_reset and not tx.must_close


@pytest.mark.parametrize("offered", [(), ("PIPELINING",)])
def test_mail_refused_applies_to_every_recipient(offered: tuple[str, ...]) -> None:
    auth = Reply(430, None, ("Authentication required",))
    need_mail = Reply(503, "5.5.1", ("Need MAIL",))
    tx = Transaction(Envelope("s@x", ("a@x", "b@x")), caps(*offered))
    sent = run(tx, [auth, need_mail, need_mail, need_mail])
    if not offered:
        assert sent == [b"MAIL FROM:<s@x>\r\n"]
    assert tx.phase is Phase.DONE and tx.awaiting == 0
    assert tx.result == {r: RecipientReply(Stage.MAIL, auth) for r in ("a@x", "b@x")}


def test_data_refused_applies_to_accepted_recipients() -> None:
    busy = Reply(451, "4.3.0", ("try later",))
    tx = Transaction(Envelope("s@x", ("a@x", "b@x")), caps("PIPELINING"))
    run(tx, [OK, OK, UNKNOWN, busy])
    assert tx.result == {
        "a@x": RecipientReply(Stage.DATA, busy),
        "b@x": RecipientReply(Stage.RCPT, UNKNOWN),
    }
    assert tx.needs_reset


def test_354_without_valid_recipients_means_drop_the_connection() -> None:
    tx = Transaction(Envelope("s@x", ("a@x",)), caps("PIPELINING"))
    run(tx, [OK, UNKNOWN, GO])
    assert tx.phase is Phase.DONE
    assert tx.must_close
    assert tx.result["a@x"].reply == UNKNOWN


def test_transaction_misuse() -> None:
    tx = Transaction(Envelope("s@x", ("a@x",)), caps())
    with pytest.raises(RuntimeError):
        tx.feed(OK)  # nothing sent yet
    tx.start()
    with pytest.raises(RuntimeError):
        tx.start()
    with pytest.raises(RuntimeError):
        tx.body_sent()
    with pytest.raises(RuntimeError):
        _ = tx.result
