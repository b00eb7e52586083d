"""Sender authentication results (SPF, DKIM, DMARC) and what we do with them, pure.

`check.py` asks DNS and the libraries; everything decided from the answers is here: the
`Authentication-Results` header (RFC 8601), the DMARC action (reject at DATA, file in Junk,
or just note it) and the fields of the transaction event. Tested as tables of values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

from lmtp_bridge.replies import Reply

# What an admin may choose for a message that fails the From domain's DMARC policy.
DMARC_ACTIONS = ("reject", "quarantine", "ignore")

QUARANTINE_HEADER = "X-Mailglue-Quarantine"


@dataclass(frozen=True)
class SpfResult:
    result: str  # none|neutral|pass|fail|softfail|temperror|permerror (RFC 7208)
    domain: str  # the domain whose policy was checked
    identity: str  # "mailfrom", or "helo" for a null sender
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        return {"result": self.result, "domain": self.domain, "identity": self.identity}


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass|fail|neutral|temperror|permerror (RFC 6376), one per signature
    domain: str  # the signature's d=
    selector: str  # its s=
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"result": self.result, "domain": self.domain, "selector": self.selector}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class DmarcResult:
    result: str  # none|pass|fail|temperror|permerror (RFC 7489)
    header_from: str  # the RFC5322.From domain ("" when there is no single one)
    policy: str = ""  # what the domain asks for a failure: none|quarantine|reject
    reason: str = ""  # e.g. "pct=50: reject applied as quarantine"

    def to_json(self) -> dict[str, str]:
        out = {"result": self.result, "header_from": self.header_from}
        if self.policy:
            out["policy"] = self.policy
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class AuthResults:
    spf: SpfResult
    dkim: tuple[DkimResult, ...]  # empty: the message has no signature
    dmarc: DmarcResult

    def to_json(self) -> dict[str, Any]:
        return {
            "spf": self.spf.to_json(),
            "dkim": [d.to_json() for d in self.dkim],
            "dmarc": self.dmarc.to_json(),
        }


def from_domain(from_values: list[str]) -> str | None:
    """The single RFC5322.From domain DMARC judges, or None if there is not exactly one.

    A message with no From, several From headers or several addresses in one has no single
    author domain; RFC 7489 (6.6.1) leaves it to the receiver, and we report permerror.
    """
    addresses = [addr for _, addr in getaddresses(from_values) if addr]
    if len(from_values) != 1 or len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rsplit("@", 1)[1].strip().rstrip(".").lower()
    return domain or None


def _property(value: str) -> str:
    """A value as RFC 8601 allows it in a property (a token, else quoted)."""
    if value and all(c.isalnum() or c in "-._@+" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_value(authserv_id: str, results: AuthResults, mail_from: str) -> str:
    """The `Authentication-Results` value (RFC 8601), one method per folded line."""
    spf = results.spf
    identity = (
        f"smtp.mailfrom={_property(mail_from)}"
        if spf.identity == "mailfrom"
        else f"smtp.helo={_property(spf.domain)}"
    )
    parts = [f"spf={spf.result} {identity}"]
    if not results.dkim:
        parts.append("dkim=none")
    for sig in results.dkim:
        comment = f" ({sig.reason})" if sig.reason else ""
        parts.append(
            f"dkim={sig.result}{comment} header.d={_property(sig.domain)} "
            f"header.s={_property(sig.selector)}"
        )
    dmarc = results.dmarc
    comment = f" (p={dmarc.policy})" if dmarc.policy else ""
    if dmarc.header_from:
        parts.append(f"dmarc={dmarc.result}{comment} header.from={_property(dmarc.header_from)}")
    else:
        parts.append(f"dmarc={dmarc.result}{comment}")
    return authserv_id + ";\n\t" + ";\n\t".join(parts)


class AuthAction(enum.Enum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"  # delivered, but to Junk: marked X-Spam-Flag: YES
    REJECT = "reject"


@dataclass(frozen=True)
class AuthDecision:
    action: AuthAction
    reply: Reply | None = None  # for REJECT
    headers: tuple[tuple[str, str], ...] = ()  # for QUARANTINE


def _failures(results: AuthResults) -> str:
    spf = results.spf
    signed = sorted({d.domain for d in results.dkim if d.result == "pass"})
    dkim = f"DKIM signed by {', '.join(signed)} only" if signed else "no valid DKIM signature"
    return f"SPF {spf.result} for {spf.domain or 'the sender'}, {dkim}"


def decide(results: AuthResults, on_reject: str, on_quarantine: str) -> AuthDecision:
    """What a DMARC failure makes us do, by the policy the From domain publishes.

    `on_reject` applies to `p=reject` (reject | quarantine | ignore), `on_quarantine` to
    `p=quarantine` (quarantine | ignore). Anything but a clear `fail` (pass, none, a DNS
    temperror, a broken record) changes nothing: we refuse only what the domain asked us to.
    """
    dmarc = results.dmarc
    if dmarc.result != "fail":
        return AuthDecision(AuthAction.ACCEPT)
    wanted = {"reject": on_reject, "quarantine": on_quarantine}.get(dmarc.policy, "ignore")
    if wanted == "reject":
        text = (
            f"Message rejected: {dmarc.header_from} publishes a DMARC reject policy and this "
            f"message fails it ({_failures(results)})"
        )
        return AuthDecision(AuthAction.REJECT, Reply.make(550, "5.7.1", text))
    if wanted == "quarantine":
        note = f"DMARC {dmarc.policy} policy of {dmarc.header_from} failed ({_failures(results)})"
        return AuthDecision(
            AuthAction.QUARANTINE, headers=(("X-Spam-Flag", "YES"), (QUARANTINE_HEADER, note))
        )
    return AuthDecision(AuthAction.ACCEPT)


def authserv_id_of(value: str) -> str:
    """The authserv-id an `Authentication-Results` value claims (its first token), lowercase."""
    head = value.split(";", 1)[0]
    # RFC 8601 allows a comment and a version after the id: "mx.example.org 1 (comment)"
    token = head.strip().split(None, 1)[0] if head.strip() else ""
    return token.lower()
