"""Sans-IO LMTP transaction: what to send, and which recipient each reply belongs to.

The shell sends the bytes this module returns, feeds back every reply it reads, and streams the
body when `phase` says so. All protocol decisions (pipelining or lock-step, which MAIL
parameters, mapping the RFC 2033 per-recipient replies after the dot) live here and are tested
without sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from lmtp_bridge.replies import Reply

__all__ = [
    "DATA",
    "NOOP",
    "QUIT",
    "RSET",
    "Capabilities",
    "Envelope",
    "MailAddressError",
    "Phase",
    "RecipientReply",
    "Stage",
    "Transaction",
    "lhlo_command",
    "mail_command",
    "quote_address",
    "rcpt_command",
    "replies_only",
    "unique",
]

DATA = b"DATA\r\n"
RSET = b"RSET\r\n"
NOOP = b"NOOP\r\n"
QUIT = b"QUIT\r\n"

_FORBIDDEN = frozenset("\r\n\0<>")


class MailAddressError(ValueError):
    """An address that cannot be put on the wire without changing the command's meaning."""


def quote_address(address: str, *, allow_empty: bool = False) -> str:
    """`<address>`, or raise: CR, LF, NUL, `<` and `>` would let an address inject commands."""
    bad = sorted(_FORBIDDEN.intersection(address))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise MailAddressError(
            f"address {address!r} contains {shown}; pass the bare address without angle brackets"
        )
    if not address and not allow_empty:
        raise MailAddressError("empty address: only the sender may be <> (the null sender)")
    if address != address.strip():
        raise MailAddressError(f"address {address!r} has leading or trailing whitespace")
    return f"<{address}>"


def lhlo_command(name: str) -> bytes:
    """`LHLO name`; the name must be one printable token."""
    if not name or not name.isprintable() or any(c.isspace() for c in name):
        raise ValueError(f"LHLO name {name!r} must be one printable word")
    return f"LHLO {name}\r\n".encode()


@dataclass(frozen=True)
class Capabilities:
    """What the server offered in its LHLO reply (keyword → parameters, keywords upper-case)."""

    greeting: str = ""
    keywords: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_lhlo(cls, reply: Reply) -> Capabilities:
        """Read capabilities from the LHLO reply (first line is the server's name)."""
        words: dict[str, str] = {}
        for line in reply.lines[1:]:
            key, _, params = line.strip().partition(" ")
            if key:
                words[key.upper()] = params.strip()
        return cls(reply.lines[0] if reply.lines else "", words)

    def offers(self, keyword: str) -> bool:
        """True if the server listed this extension."""
        return keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        """RFC 2920: several commands may be sent before reading their replies."""
        return self.offers("PIPELINING")

    @property
    def eightbitmime(self) -> bool:
        """RFC 6152: BODY=8BITMIME is understood."""
        return self.offers("8BITMIME")

    @property
    def smtputf8(self) -> bool:
        """RFC 6531: UTF-8 addresses are allowed with the SMTPUTF8 parameter."""
        return self.offers("SMTPUTF8")

    @property
    def size(self) -> int | None:
        """RFC 1870: None if SIZE is not offered, 0 if offered without a limit, else the limit."""
        if not self.offers("SIZE"):
            return None
        value = self.keywords["SIZE"]
        return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class Envelope:
    """Sender, recipients (distinct, in order), and what the MAIL parameters need to know."""

    sender: str
    recipients: tuple[str, ...]
    size: int | None = None
    eight_bit: bool = False

    def __post_init__(self) -> None:
        quote_address(self.sender, allow_empty=True)
        if not self.recipients:
            raise ValueError("an LMTP transaction needs at least one recipient")
        for rcpt in self.recipients:
            quote_address(rcpt)
        if len(set(self.recipients)) != len(self.recipients):
            raise ValueError("duplicate recipients: each must appear once (LMTP answers each)")
        if self.size is not None and self.size < 0:
            raise ValueError(f"message size {self.size} is negative")


def mail_command(envelope: Envelope, caps: Capabilities) -> bytes:
    """`MAIL FROM:<sender>` with SIZE, BODY=8BITMIME and SMTPUTF8 where offered and needed."""
    params: list[str] = []
    if caps.size is not None and envelope.size is not None:
        params.append(f"SIZE={envelope.size}")
    if caps.eightbitmime and envelope.eight_bit:
        params.append("BODY=8BITMIME")
    addresses = (envelope.sender, *envelope.recipients)
    if caps.smtputf8 and not all(a.isascii() for a in addresses):
        params.append("SMTPUTF8")
    line = " ".join([f"MAIL FROM:{quote_address(envelope.sender, allow_empty=True)}", *params])
    return f"{line}\r\n".encode()


def rcpt_command(recipient: str) -> bytes:
    """`RCPT TO:<recipient>`."""
    return f"RCPT TO:{quote_address(recipient)}\r\n".encode()


class Stage(StrEnum):
    """The command whose reply decided a recipient's fate."""

    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class RecipientReply:
    """A recipient's definitive reply and the stage it came from."""

    stage: Stage
    reply: Reply

    def __str__(self) -> str:
        return f"{self.reply} (at {self.stage.value})"


class Phase(Enum):
    """Where the transaction is; the shell acts on it."""

    ENVELOPE = "envelope"  # read replies to MAIL/RCPT/DATA, send what feed() returns
    BODY = "body"  # stream the body, then call body_sent()
    FINAL = "final"  # read one reply per accepted recipient
    DONE = "done"


class Transaction:
    """One MAIL…DATA…dot exchange; pipelined when the server offers PIPELINING."""

    def __init__(self, envelope: Envelope, caps: Capabilities) -> None:
        self.envelope = envelope
        self.caps = caps
        self.phase = Phase.ENVELOPE
        self.needs_reset = False
        self.must_close = False
        self._awaiting: deque[tuple[Stage, str | None]] = deque()
        self._mail_reply: Reply | None = None
        self._accepted: list[str] = []
        self._rcpt_refused: dict[str, Reply] = {}
        self._decided: dict[str, RecipientReply] = {}
        self._next_rcpt = 0
        self._started = False

    @property
    def awaiting(self) -> int:
        """Replies still expected for what has been sent."""
        return len(self._awaiting)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Recipients the server accepted at RCPT, in order (they get the final replies)."""
        return tuple(self._accepted)

    @property
    def decided(self) -> dict[str, RecipientReply]:
        """Recipients whose fate is already known (refusals, final replies received so far)."""
        return dict(self._decided)

    @property
    def result(self) -> dict[str, RecipientReply]:
        """Every recipient's definitive reply, in envelope order; only once DONE."""
        if self.phase is not Phase.DONE:
            raise RuntimeError(f"transaction not finished (phase {self.phase.value})")
        return {r: self._decided[r] for r in self.envelope.recipients}

    def start(self) -> bytes:
        """First bytes to send: MAIL alone, or MAIL + every RCPT + DATA when pipelining."""
        if self._started:
            raise RuntimeError("Transaction.start() called twice")
        self._started = True
        out = self._queue(Stage.MAIL, None, mail_command(self.envelope, self.caps))
        if self.caps.pipelining:
            for rcpt in self.envelope.recipients:
                out += self._queue(Stage.RCPT, rcpt, rcpt_command(rcpt))
            self._next_rcpt = len(self.envelope.recipients)
            out += self._queue(Stage.DATA, None, DATA)
        return out

    def feed(self, reply: Reply) -> bytes:
        """Take the next reply; return what to send now (lock-step), possibly nothing."""
        if not self._awaiting:
            raise RuntimeError(f"unexpected reply {reply} in phase {self.phase.value}")
        stage, rcpt = self._awaiting.popleft()
        if stage is Stage.MAIL:
            return self._on_mail(reply)
        if stage is Stage.RCPT:
            assert rcpt is not None
            return self._on_rcpt(rcpt, reply)
        if stage is Stage.DATA:
            self._on_data(reply)
            return b""
        assert rcpt is not None
        self._decided[rcpt] = RecipientReply(Stage.FINAL, reply)
        if not self._awaiting:
            self.phase = Phase.DONE
        return b""

    def body_sent(self) -> None:
        """The shell has sent the whole body and the terminating dot."""
        if self.phase is not Phase.BODY:
            raise RuntimeError(f"body_sent() in phase {self.phase.value}")
        self.phase = Phase.FINAL
        for rcpt in self._accepted:
            self._awaiting.append((Stage.FINAL, rcpt))

    def _queue(self, stage: Stage, rcpt: str | None, command: bytes) -> bytes:
        self._awaiting.append((stage, rcpt))
        return command

    def _on_mail(self, reply: Reply) -> bytes:
        self._mail_reply = reply
        self.needs_reset = True
        if reply.is_positive:
            return self._next_lockstep()
        for rcpt in self.envelope.recipients:
            self._decided[rcpt] = RecipientReply(Stage.MAIL, reply)
        if not self._awaiting:
            self.phase = Phase.DONE
        return b""

    def _on_rcpt(self, rcpt: str, reply: Reply) -> bytes:
        mail_ok = self._mail_reply is not None and self._mail_reply.is_positive
        if mail_ok and reply.is_positive:
            self._accepted.append(rcpt)
        elif mail_ok:
            self._decided[rcpt] = RecipientReply(Stage.RCPT, reply)
        return self._next_lockstep()

    def _next_lockstep(self) -> bytes:
        if self.caps.pipelining:
            return b""
        if self._next_rcpt < len(self.envelope.recipients):
            rcpt = self.envelope.recipients[self._next_rcpt]
            self._next_rcpt += 1
            return self._queue(Stage.RCPT, rcpt, rcpt_command(rcpt))
        if self._accepted:
            return self._queue(Stage.DATA, None, DATA)
        self.phase = Phase.DONE  # every recipient refused: no DATA
        return b""

    def _on_data(self, reply: Reply) -> None:
        mail_ok = self._mail_reply is not None and self._mail_reply.is_positive
        if reply.code == 354 and mail_ok and self._accepted:
            self.phase = Phase.BODY
            self.needs_reset = False  # the dot ends the transaction
            return
        if reply.code == 354:
            # A server that opens DATA with no valid recipient breaks RFC 2920; dropping the
            # connection ends the data phase without sending anything it could deliver.
            self.must_close = True
        else:
            for rcpt in self._accepted:
                self._decided[rcpt] = RecipientReply(Stage.DATA, reply)
        self.phase = Phase.DONE


def replies_only(result: Mapping[str, RecipientReply]) -> dict[str, Reply]:
    """Drop the stage: recipient → reply."""
    return {r: rr.reply for r, rr in result.items()}


def unique(recipients: Sequence[str]) -> tuple[str, ...]:
    """Recipients without repeats, first occurrence kept (Postfix may hand over duplicates)."""
    return tuple(dict.fromkeys(recipients))
