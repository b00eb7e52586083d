"""The pure decision: request attributes plus lookup results in, one policy action out.

No I/O here. The server asks `plan()` which lookups a request needs, performs them, and hands
the results back to `decide()`; rate limiting is applied last by `apply_rate()`, and only to a
request that would otherwise pass, so refused attempts never use up a sender's allowance.
Outages answer DEFER_IF_PERMIT, never DUNNO: an outage must neither let mail for non-existent
users in nor bounce mail for real ones.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_address

from milters.common.addresses import base_address, domain_of
from milters.common.directory import User
from milters.policy.aliases import Expansion
from milters.policy.config import RateLimitConfig, RateLimits, SenderRules
from milters.policy.ratelimit import RateExceeded

__all__ = [
    "FULL",
    "NOT_FOUND",
    "Decision",
    "Facts",
    "Full",
    "MailboxState",
    "MemberCheck",
    "NotFound",
    "Outage",
    "Plan",
    "User",
    "apply_rate",
    "decide",
    "plan",
    "rate_key",
]

DUNNO = "DUNNO"


@dataclass(frozen=True)
class NotFound:
    """The directory answered, and no entry matched."""


NOT_FOUND = NotFound()


@dataclass(frozen=True)
class Full:
    """The mailbox exists and is over its quota."""


FULL = Full()


@dataclass(frozen=True)
class Outage:
    """A backend could not answer (down, slow, confused); `detail` goes to the log only."""

    backend: str  # "ldap" or "cyrus"
    detail: str


UserLookup = User | NotFound | Outage
MailboxState = bool | Full | Outage  # exists? (True/False), over quota, or unknown


@dataclass(frozen=True)
class Plan:
    """What must be looked up for one request; None means not needed."""

    login: str | None = None  # SASL login whose addresses bound the envelope sender
    sender: str | None = None  # the sender (extension removed) the login must own
    recipient: str | None = None  # local recipient (extension removed) that must exist
    envelope_sender: str = ""  # with a recipient: the sender (extension removed, lower case)
    null_sender_login: bool = False  # `MAIL FROM:<>` after AUTH: refused, no lookup needed
    unauthenticated_local_sender: bool = False  # our domain, no login, untrusted client


@dataclass(frozen=True)
class MemberCheck:
    """One local member of an alias, checked like a recipient of its own."""

    address: str
    user: UserLookup
    mailbox: MailboxState | None = None  # None: not asked (no such user, or LDAP down)

    @property
    def deliverable(self) -> bool:
        return isinstance(self.user, User) and self.mailbox is True

    @property
    def outage(self) -> Outage | None:
        for found in (self.user, self.mailbox):
            if isinstance(found, Outage):
                return found
        return None


AliasLookup = Expansion | Outage | None  # None: not an alias (or not asked)


@dataclass(frozen=True)
class ListPost:
    """A post to one of Mailman's lists; on a members-only list, whether the sender is on it."""

    members_only: bool = False
    sender_is_member: bool | Outage | None = None  # None: not asked (not members-only)


@dataclass(frozen=True)
class Facts:
    login_user: UserLookup | None = None
    recipient_user: UserLookup | None = None
    mailbox: MailboxState | None = None  # does recipient_user's Cyrus mailbox exist?
    sender_alias: AliasLookup = None  # the sender as an alias, when the login owns it not
    recipient_alias: AliasLookup = None  # the recipient as an alias, when it is no user
    members: tuple[MemberCheck, ...] = ()  # recipient_alias's local members, checked
    recipient_list: ListPost | None = None  # the recipient is a Mailman list address


@dataclass(frozen=True)
class Decision:
    action: str  # the text after `action=`
    reason: str  # a short stable code for logs and jq

    @property
    def passes(self) -> bool:
        return self.action == DUNNO


def _in_networks(address: str, networks: Collection[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def plan(
    request: Mapping[str, str],
    local_domains: Collection[str],
    delimiter: str,
    senders: SenderRules | None = None,
) -> Plan:
    """The lookups a request needs. `policy_context` (Postfix's check_policy_service option)
    says which restriction list asked: `sender` checks only the sender, `recipient` only the
    recipient; without it, both."""
    if request.get("request") != "smtpd_access_policy":
        return Plan()
    context = request.get("policy_context", "").lower()
    rules = senders or SenderRules()
    login = request.get("sasl_username") or None
    sender = request.get("sender", "")
    result = Plan()
    if context != "recipient":
        if login is not None and not sender:
            result = Plan(null_sender_login=rules.refuse_null_sender_after_login)
        elif login is not None:
            result = Plan(login=login, sender=base_address(sender, delimiter))
        elif (
            sender
            and rules.local_requires_login
            and domain_of(sender) in local_domains
            and not _in_networks(request.get("client_address", ""), rules.trusted_networks)
        ):
            result = Plan(unauthenticated_local_sender=True)
    recipient = request.get("recipient", "")
    if (
        context != "sender"
        and request.get("protocol_state", "").upper() == "RCPT"
        and "@" in recipient
        and domain_of(recipient) in local_domains
    ):
        result = replace(
            result,
            recipient=base_address(recipient, delimiter),
            envelope_sender=base_address(sender, delimiter).lower() if sender else "",
        )
    return result


def _defer(what: str, outage: Outage) -> Decision:
    service = {"ldap": "directory", "mailman": "mailing lists"}.get(outage.backend, "mailbox store")
    return Decision(
        f"DEFER_IF_PERMIT 4.4.3 {what} verification temporarily unavailable ({service}), "
        "try again later",
        f"{outage.backend}_unavailable",
    )


# Postfix puts "<address>: Sender address rejected: " (or "Recipient") before these texts.
NOT_OWNED = "553 5.7.1 not owned by user {login}: log in as its owner to send as it"
NULL_SENDER = "553 5.7.1 a null sender (MAIL FROM:<>) is not accepted from a logged-in user"
LOCAL_SENDER = "553 5.7.1 this is an address of ours: log in (submission, port 587) to send as it"
NO_SUCH_USER = "550 5.1.1 no such user"
NO_MAILBOX = "550 5.1.1 mailbox not yet created (the user has never logged in)"
# 452, not 552: the user can make room, and the sender's server keeps trying meanwhile.
OVER_QUOTA = "452 4.2.2 mailbox full, try again later"
ALIAS_BROKEN = "550 5.4.6 alias misconfigured ({problem}); postmaster has been told in the log"
ALIAS_EMPTY = "550 5.1.1 alias has no member who can receive mail"
MEMBERS_ONLY = "550 5.7.1 only its members may post to this list"


def _sender_decision(wanted: Plan, facts: Facts) -> Decision | None:
    """The refusal for the envelope sender, or None when the sender may be used."""
    if wanted.null_sender_login:
        return Decision(NULL_SENDER, "null_sender_after_login")
    if wanted.unauthenticated_local_sender:
        return Decision(LOCAL_SENDER, "local_sender_without_login")
    if wanted.login is None or wanted.sender is None:
        return None
    owner = facts.login_user
    assert owner is not None, "plan asked for the login's user"
    if isinstance(owner, Outage):
        return _defer("sender address", owner)
    if isinstance(owner, User) and wanted.sender in owner.addresses:
        return None
    alias = facts.sender_alias
    if isinstance(alias, Outage):
        return _defer("sender address", alias)
    if (
        isinstance(owner, User)
        and isinstance(alias, Expansion)
        and alias.problem is None
        and set(alias.local) & set(owner.addresses)
    ):
        return None
    return Decision(NOT_OWNED.format(login=wanted.login), "sender_not_owned")


def _alias_decision(alias: Expansion, members: tuple[MemberCheck, ...]) -> Decision:
    """An alias is a recipient when at least one address it reaches can take the mail.

    Members that cannot (never logged in, gone from LDAP) do not block the others: Postfix
    then delivers to the rest. Only when none can, a directory or mailbox outage defers and
    otherwise the alias is refused.
    """
    if alias.problem is not None:
        return Decision(ALIAS_BROKEN.format(problem=alias.problem), "alias_misconfigured")
    if alias.remote or any(m.deliverable for m in members):
        complete = all(m.deliverable for m in members)
        return Decision(DUNNO, "alias_ok" if complete else "alias_partly_deliverable")
    outage = next((o for m in members if (o := m.outage) is not None), None)
    if outage is not None:
        return _defer("recipient address", outage)
    if any(isinstance(m.mailbox, Full) for m in members):
        return Decision(OVER_QUOTA, "over_quota")
    return Decision(ALIAS_EMPTY, "alias_without_deliverable_member")


def _list_decision(post: ListPost) -> Decision:
    if not post.members_only:
        return Decision(DUNNO, "mailing_list")
    member = post.sender_is_member
    if isinstance(member, Outage):
        return _defer("list membership", member)
    if member:
        return Decision(DUNNO, "mailing_list_member")
    return Decision(MEMBERS_ONLY, "mailing_list_non_member")


def decide(request: Mapping[str, str], wanted: Plan, facts: Facts) -> Decision:
    if request.get("request") != "smtpd_access_policy":
        return Decision("DEFER_IF_PERMIT 4.3.5 unsupported policy request", "bad_request")
    refused = _sender_decision(wanted, facts)
    if refused is not None:
        return refused
    if wanted.recipient is None:
        return Decision(DUNNO, "not_checked")
    post = facts.recipient_list
    if post is not None:
        return _list_decision(post)
    user = facts.recipient_user
    assert user is not None, "plan asked for the recipient's user"
    if isinstance(user, Outage):
        return _defer("recipient address", user)
    if isinstance(user, NotFound):
        alias = facts.recipient_alias
        if isinstance(alias, Outage):
            return _defer("recipient address", alias)
        if isinstance(alias, Expansion):
            return _alias_decision(alias, facts.members)
        return Decision(NO_SUCH_USER, "no_such_user")
    mailbox = facts.mailbox
    assert mailbox is not None, "a found user's mailbox must be checked"
    if isinstance(mailbox, Outage):
        return _defer("recipient address", mailbox)
    if isinstance(mailbox, Full):
        return Decision(OVER_QUOTA, "over_quota")
    if not mailbox:
        return Decision(NO_MAILBOX, "no_mailbox")
    return Decision(DUNNO, "recipient_ok")


def rate_key(request: Mapping[str, str], config: RateLimitConfig) -> tuple[str, RateLimits] | None:
    """Which counter a request charges: the SASL login, else the client address; RCPT only."""
    if request.get("protocol_state", "").upper() != "RCPT":
        return None
    if request.get("policy_context", "").lower() == "sender":
        return None  # the recipient restriction's request counts this RCPT
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
