"""An SMTP client for tests that returns every reply instead of raising on 4xx/5xx.

Tests assert the exact reply a sender gets (451 4.x.x, 550 5.1.1, 554 5.7.1, ...), per
recipient and for DATA, so smtplib's exceptions would be in the way.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
NO_REPLY = -1
"""Pseudo code when the server closed the connection instead of replying."""


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code, e.g. "5.1.1", if the text starts with one."""
        m = _ENHANCED.match(self.text)
        return m.group(1) if m else None

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class Transaction:
    """All replies of one mail transaction; `data` is None if DATA was never sent."""

    mail: Reply
    rcpt: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None

    @property
    def accepted(self) -> list[str]:
        return [r for r, reply in self.rcpt.items() if reply.code // 100 == 2]


def _reply(code: int, msg: bytes | str) -> Reply:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
    return Reply(code, text.replace("\n", " "))


def tls_context() -> ssl.SSLContext:
    """For test servers' self-signed certificates: encrypt, do not verify."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def send(
    address: tuple[str, int],
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    helo: str = "client.relay.test",
    timeout: float = 120,
    *,
    login: tuple[str, str] | None = None,
    starttls: bool = False,
    source: str | None = None,
    mail_options: Sequence[str] = (),
) -> Transaction:
    """One SMTP transaction; the message goes verbatim (smtplib only dot-stuffs bytes).

    `login` implies STARTTLS first, as a mail client does; `source` picks the client's own
    loopback address (each address is a different client to Postfix's anvil); `mail_options`
    go on MAIL FROM (e.g. `SIZE=…`, as a mail client declares a message's size).
    """
    bind = (source, 0) if source else None
    with smtplib.SMTP(*address, timeout=timeout, source_address=bind) as smtp:
        smtp.ehlo(helo)
        tx = Transaction(Reply(NO_REPLY, "MAIL not sent"))
        if starttls or login is not None:
            smtp.starttls(context=tls_context())
            smtp.ehlo(helo)
        if login is not None:
            try:
                smtp.login(*login)
            except smtplib.SMTPAuthenticationError as exc:
                tx.mail = Reply(NO_REPLY, f"AUTH refused: {exc.smtp_code} {exc.smtp_error!r}")
                return tx
        try:
            tx.mail = _reply(*smtp.mail(sender, list(mail_options)))
            if tx.mail.code // 100 != 2:
                return tx
            for rcpt in recipients:
                tx.rcpt[rcpt] = _reply(*smtp.rcpt(rcpt))
            if tx.accepted:
                try:
                    tx.data = _reply(*smtp.data(message))
                except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
                    tx.data = _reply(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPServerDisconnected as exc:
            tx.data = Reply(NO_REPLY, f"disconnected: {exc}")
        return tx
