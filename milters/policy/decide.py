"""The pure decision: request attributes plus lookup results in, one policy action out.

No I/O here. The server asks `plan()` which lookups a request needs, performs them, and hands
the results back to `decide()`; rate limiting is applied last by `apply_rate()`, and only to a
request that would otherwise pass, so refused attempts never use up a sender's allowance.
Outages answer DEFER_IF_PERMIT, never DUNNO: an outage must neither let mail for non-existent
users in nor bounce mail for real ones.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from milters.policy.config import RateLimitConfig, RateLimits
from milters.policy.ratelimit import RateExceeded

__all__ = [
    "NOT_FOUND",
    "Decision",
    "Facts",
    "NotFound",
    "Outage",
    "Plan",
    "User",
    "apply_rate",
    "base_address",
    "decide",
    "plan",
    "rate_key",
]

DUNNO = "DUNNO"


@dataclass(frozen=True)
class User:
    """A directory entry: login name and every address it owns (lower case)."""

    uid: str
    addresses: tuple[str, ...]
    route: str | None = None  # the route attribute's value (e.g. mailHost), when asked for


@dataclass(frozen=True)
class NotFound:
    """The directory answered, and no entry matched."""


NOT_FOUND = NotFound()


@dataclass(frozen=True)
class Outage:
    """A backend could not answer (down, slow, confused); `detail` goes to the log only."""

    backend: str  # "ldap" or "cyrus"
    detail: str


UserLookup = User | NotFound | Outage


@dataclass(frozen=True)
class Plan:
    """What must be looked up for one request; None means not needed."""

    login: str | None = None  # SASL login whose addresses bound the envelope sender
    recipient: str | None = None  # local recipient (extension removed) that must exist


@dataclass(frozen=True)
class Facts:
    login_user: UserLookup | None = None
    recipient_user: UserLookup | None = None
    mailbox: bool | Outage | None = None  # does recipient_user's Cyrus mailbox exist?


@dataclass(frozen=True)
class Decision:
    action: str  # the text after `action=`
    reason: str  # a short stable code for logs and jq

    @property
    def passes(self) -> bool:
        return self.action == DUNNO


def base_address(address: str, delimiter: str) -> str:
    """Lower-cased address without its extension (`alice+lists@x` -> `alice@x`)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        local, domain = domain, ""
    if delimiter:
        cut = min((i for i in (local.find(c) for c in delimiter) if i > 0), default=-1)
        if cut > 0:
            local = local[:cut]
    return f"{local}@{domain.rstrip('.')}".lower() if at else local.lower()


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def plan(request: Mapping[str, str], local_domains: Collection[str], delimiter: str) -> Plan:
    if request.get("request") != "smtpd_access_policy":
        return Plan()
    login = request.get("sasl_username") or None
    sender = request.get("sender", "")
    recipient = request.get("recipient", "")
    wanted = None
    if (
        request.get("protocol_state", "").upper() == "RCPT"
        and "@" in recipient
        and _domain(recipient) in local_domains
    ):
        wanted = base_address(recipient, delimiter)
    return Plan(login=login if sender else None, recipient=wanted)


def _defer(what: str, address: str, outage: Outage) -> Decision:
    service = "directory" if outage.backend == "ldap" else "mailbox store"
    return Decision(
        f"DEFER_IF_PERMIT 4.4.3 <{address}>: {what} address verification temporarily "
        f"unavailable ({service}), try again later",
        f"{outage.backend}_unavailable",
    )


def decide(request: Mapping[str, str], wanted: Plan, facts: Facts, delimiter: str) -> Decision:
    if request.get("request") != "smtpd_access_policy":
        return Decision("DEFER_IF_PERMIT 4.3.5 unsupported policy request", "bad_request")
    if wanted.login is not None:
        sender = request.get("sender", "")
        owner = facts.login_user
        assert owner is not None, "plan asked for the login's user"
        if isinstance(owner, Outage):
            return _defer("Sender", sender, owner)
        if isinstance(owner, NotFound) or base_address(sender, delimiter) not in owner.addresses:
            return Decision(
                f"553 5.7.1 <{sender}>: Sender address not owned by user {wanted.login}",
                "sender_not_owned",
            )
    if wanted.recipient is None:
        return Decision(DUNNO, "not_checked")
    address = request.get("recipient", wanted.recipient)
    user = facts.recipient_user
    assert user is not None, "plan asked for the recipient's user"
    if isinstance(user, Outage):
        return _defer("Recipient", address, user)
    if isinstance(user, NotFound):
        return Decision(
            f"550 5.1.1 <{address}>: Recipient address rejected: no such user", "no_such_user"
        )
    mailbox = facts.mailbox
    assert mailbox is not None, "a found user's mailbox must be checked"
    if isinstance(mailbox, Outage):
        return _defer("Recipient", address, mailbox)
    if not mailbox:
        return Decision(
            f"550 5.1.1 <{address}>: Recipient address rejected: mailbox not yet created "
            "(the user has never logged in)",
            "no_mailbox",
        )
    return Decision(DUNNO, "recipient_ok")


def rate_key(request: Mapping[str, str], config: RateLimitConfig) -> tuple[str, RateLimits] | None:
    """Which counter a request charges: the SASL login, else the client address; RCPT only."""
    if request.get("protocol_state", "").upper() != "RCPT":
        return None
    login = request.get("sasl_username")
    if login:
        limits, key = config.sasl_user, f"sasl_user:{login}"
    else:
        client = request.get("client_address")
        if not client:
            return None
        limits, key = config.client_address, f"client_address:{client}"
    if not limits.messages and not limits.recipients:
        return None
    return key, limits


def apply_rate(decision: Decision, exceeded: RateExceeded | None) -> Decision:
    if exceeded is None or not decision.passes:
        return decision
    who = exceeded.key.replace("sasl_user:", "user ").replace("client_address:", "client ")
    return Decision(
        f"450 4.7.1 Rate limit exceeded for {who}: more than {exceeded.limit} "
        f"{exceeded.what} in {exceeded.window:g} s, try again in {exceeded.retry_after:.0f} s",
        f"rate_limit_{exceeded.what}",
    )
