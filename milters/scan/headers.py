"""Header logic of the scan milter, pure: which headers we own, and the Received line we scan.

We own every `X-Spam-*`, `X-Virus-*` and `X-Mailglue-*` header, and every
`Authentication-Results` that names our host as its authserv-id: incoming copies are removed
so a sender cannot forge `X-Spam-Flag: NO` (or YES), or `dmarc=pass` in our name, past us or
past the user's Sieve rules and mail client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from milters.auth.results import authserv_id_of

OWNED_PREFIXES = ("x-spam-", "x-virus-", "x-mailglue-")


def is_owned(name: str, value: str = "", authserv_id: str = "") -> bool:
    key = name.strip().lower()
    if key.startswith(OWNED_PREFIXES):
        return True
    return (
        bool(authserv_id)
        and key == "authentication-results"
        and authserv_id_of(value) == authserv_id.lower()
    )


def owned_deletions(
    headers: Sequence[tuple[str, str]], authserv_id: str = ""
) -> list[tuple[str, int]]:
    """(name, index) pairs for milter `chgheader(name, index, None)`, last occurrence first.

    The milter index counts occurrences of one name (case-insensitively) from 1; deleting
    from the highest index down keeps the lower indexes valid whatever the MTA renumbers.
    """
    seen: dict[str, int] = {}
    deletions: list[tuple[str, int]] = []
    for name, value in headers:
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        if is_owned(name, value, authserv_id):
            deletions.append((name, seen[key]))
    return sorted(deletions, key=lambda item: -item[1])


def no_autoreply(
    tagged: bool, inbound: bool, headers: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """`Precedence: junk` for tagged spam coming in, unless it already has a Precedence.

    Cyrus's vacation (and most autoresponders and list servers) never answer such a message,
    so an out-of-office rule answers no spam, wherever the user's filter editor put it.
    """
    if tagged and inbound and not any(n.strip().lower() == "precedence" for n, _ in headers):
        return [("Precedence", "junk")]
    return []


@dataclass(frozen=True)
class ClientInfo:
    """What Postfix told the milter about the SMTP client (macros and callbacks)."""

    addr: str = ""
    name: str = ""
    helo: str = ""
    tls: str = ""  # TLS version, empty without TLS
    auth_user: str = ""  # SASL login name, empty when not authenticated


def received_header(
    client: ClientInfo, by_host: str, queue_id: str, recipients: Sequence[str], when: datetime
) -> tuple[str, str]:
    """The Received header Postfix puts on the stored copy, rebuilt for the scanned copy.

    Postfix does not pass its own Received line to milters; without one spamd adds
    NO_RECEIVED/NO_RELAYS and judges the wrong first hop.
    """
    protocol = "ESMTP" + ("S" if client.tls else "") + ("A" if client.auth_user else "")
    helo = client.helo or client.name or "unknown"
    name = client.name or "unknown"
    value = f"from {helo} ({name} [{client.addr or 'unknown'}])\n\tby {by_host} (Postfix)"
    value += f" with {protocol} id {queue_id or 'unknown'}"
    if len(recipients) == 1:
        value += f"\n\tfor <{recipients[0]}>"
    value += f"; {format_datetime(when)} ({when.tzname() or 'UTC'})"
    return ("Received", value)


def render(headers: Iterable[tuple[str, str]]) -> bytes:
    """Our own headers as wire bytes (CRLF): `Name: value`."""
    return render_as_received(with_leading_space(headers))


def render_as_received(headers: Iterable[tuple[str, str]]) -> bytes:
    """Headers as the MTA passed them (milter option P_HDR_LEADSPC: each value is exactly
    what follows the colon, its leading space or tab and folding included) as wire bytes.

    Byte for byte what the client sent: a DKIM signature with `simple` header
    canonicalization still verifies on the copy spamd scores and the copy Cyrus stores.
    """
    out = bytearray()
    for name, value in headers:
        line = f"{name}:{value}".replace("\r\n", "\n").replace("\n", "\r\n")
        out += line.encode("utf-8", "surrogateescape") + b"\r\n"
    return bytes(out)


def with_leading_space(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Our headers in the received form: with P_HDR_LEADSPC the MTA adds no space itself."""
    return [(name, " " + value) for name, value in headers]


def content_message_id(
    headers: Sequence[tuple[str, str]], body_digest: bytes, sender: str, host: str
) -> str:
    """A Message-ID derived from the content, identical on every retry of the same message.

    Cyrus suppresses duplicates by Message-ID (and Date); a random id would defeat that when
    a sender retries after a 451 that came after some recipients were already delivered.
    """
    digest = hashlib.sha256()
    digest.update(sender.encode("utf-8", "surrogateescape") + b"\0")
    for name, value in headers:
        if is_owned(name):
            continue
        digest.update(f"{name.lower()}:{value}\0".encode("utf-8", "surrogateescape"))
    digest.update(body_digest)
    return f"<{digest.hexdigest()[:32]}.mailglue@{host}>"
