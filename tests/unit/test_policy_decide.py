"""The decision table: request attributes and lookup results in, policy action out."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from milters.common.addresses import base_address
from milters.policy.aliases import Expansion
from milters.policy.config import RateLimitConfig, RateLimits, SenderRules
from milters.policy.decide import (
    FULL,
    NOT_FOUND,
    Decision,
    Facts,
    ListPost,
    MemberCheck,
    Outage,
    Plan,
    User,
    apply_rate,
    decide,
    plan,
    rate_key,
)
from milters.policy.ratelimit import RateExceeded

NOT_OWNED = "553 5.7.1 not owned by user alice: log in as its owner to send as it"
NULL_SENDER = "553 5.7.1 a null sender (MAIL FROM:<>) is not accepted from a logged-in user"
LOCAL_SENDER = "553 5.7.1 this is an address of ours: log in (submission, port 587) to send as it"
ALIAS_EMPTY = "550 5.1.1 alias has no member who can receive mail"

LOCAL = ("example.org", "example.net")
ALICE = User("alice", ("alice@example.org", "alice.liddell@example.org"))
LDAP_DOWN = Outage("ldap", "SERVER_DOWN")
CYRUS_DOWN = Outage("cyrus", "connection refused")


def req(**attrs: str) -> dict[str, str]:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.1",
        "sender": "someone@elsewhere.test",
        "recipient": "alice@example.org",
        "sasl_username": "",
        "instance": "1a.2b.3c",
    }
    base.update(attrs)
    return base


def run(request: dict[str, str], facts: Facts, delimiter: str = "+") -> Decision:
    return decide(request, plan(request, LOCAL, delimiter), facts)


# --- plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({}, Plan(recipient="alice@example.org", envelope_sender="someone@elsewhere.test")),
        (
            {"recipient": "Alice+News@Example.ORG"},
            Plan(recipient="alice@example.org", envelope_sender="someone@elsewhere.test"),
        ),
        (
            {"recipient": "alice@example.net."},
            Plan(recipient="alice@example.net", envelope_sender="someone@elsewhere.test"),
        ),
        ({"recipient": "someone@elsewhere.test"}, Plan()),
        ({"recipient": "postmaster"}, Plan()),
        ({"protocol_state": "DATA"}, Plan()),
        ({"protocol_state": "END-OF-MESSAGE"}, Plan()),
        ({"request": "other"}, Plan()),
        (
            {"sasl_username": "alice"},
            Plan(
                login="alice",
                sender="someone@elsewhere.test",
                recipient="alice@example.org",
                envelope_sender="someone@elsewhere.test",
            ),
        ),
        (
            {"sasl_username": "alice", "sender": ""},
            Plan(recipient="alice@example.org", null_sender_login=True),
        ),
        (
            {"sasl_username": "alice", "protocol_state": "MAIL", "recipient": ""},
            Plan(login="alice", sender="someone@elsewhere.test"),
        ),
        (
            {"sender": "Boss+x@Example.org"},
            Plan(
                recipient="alice@example.org",
                envelope_sender="boss@example.org",
                unauthenticated_local_sender=True,
            ),
        ),
        (
            {"sender": "boss@example.org", "client_address": "10.1.2.3"},
            Plan(recipient="alice@example.org", envelope_sender="boss@example.org"),
        ),
        ({"sender": ""}, Plan(recipient="alice@example.org")),
        ({"policy_context": "sender"}, Plan()),
        (
            {"policy_context": "recipient", "sasl_username": "alice"},
            Plan(recipient="alice@example.org", envelope_sender="someone@elsewhere.test"),
        ),
    ],
)
def test_plan(attrs: dict[str, str], expected: Plan) -> None:
    trusted = SenderRules(trusted_networks=(ip_network("10.1.0.0/16"),))
    assert plan(req(**attrs), LOCAL, "+", trusted) == expected


def test_local_sender_rule_can_be_switched_off() -> None:
    rules = SenderRules(local_requires_login=False, refuse_null_sender_after_login=False)
    assert plan(req(sender="boss@example.org"), LOCAL, "+", rules) == Plan(
        recipient="alice@example.org", envelope_sender="boss@example.org"
    )
    assert plan(req(sasl_username="alice", sender=""), LOCAL, "+", rules) == Plan(
        recipient="alice@example.org"
    )


@pytest.mark.parametrize(
    "address, delimiter, expected",
    [
        ("alice@example.org", "+", "alice@example.org"),
        ("Alice+x@Example.org", "+", "alice@example.org"),
        ("alice-x+y@example.org", "+-", "alice@example.org"),
        ("+alice@example.org", "+", "+alice@example.org"),  # a leading delimiter is no extension
        ("alice+x@example.org", "", "alice+x@example.org"),
        ("postmaster", "+", "postmaster"),
    ],
)
def test_base_address(address: str, delimiter: str, expected: str) -> None:
    assert base_address(address, delimiter) == expected


# --- recipient ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs, facts, action, reason",
    [
        ({"recipient": "x@elsewhere.test"}, Facts(), "DUNNO", "not_checked"),
        ({}, Facts(recipient_user=ALICE, mailbox=True), "DUNNO", "recipient_ok"),
        ({}, Facts(recipient_user=NOT_FOUND), "550 5.1.1 no such user", "no_such_user"),
        (
            {"recipient": "Alice+tag@example.org"},
            Facts(recipient_user=ALICE, mailbox=False),
            "550 5.1.1 mailbox not yet created (the user has never logged in)",
            "no_mailbox",
        ),
        (
            {},
            Facts(recipient_user=ALICE, mailbox=FULL),
            "452 4.2.2 mailbox full, try again later",
            "over_quota",
        ),
        (
            {},
            Facts(recipient_user=LDAP_DOWN),
            "DEFER_IF_PERMIT 4.4.3 recipient address verification temporarily unavailable "
            "(directory), try again later",
            "ldap_unavailable",
        ),
        (
            {},
            Facts(recipient_user=ALICE, mailbox=CYRUS_DOWN),
            "DEFER_IF_PERMIT 4.4.3 recipient address verification temporarily unavailable "
            "(mailbox store), try again later",
            "cyrus_unavailable",
        ),
        (
            {"request": "junk"},
            Facts(),
            "DEFER_IF_PERMIT 4.3.5 unsupported policy request",
            "bad_request",
        ),
    ],
)
def test_recipient_rules(attrs: dict[str, str], facts: Facts, action: str, reason: str) -> None:
    assert run(req(**attrs), facts) == Decision(action, reason)


def test_outage_never_answers_dunno() -> None:
    for facts in (
        Facts(recipient_user=LDAP_DOWN),
        Facts(recipient_user=ALICE, mailbox=CYRUS_DOWN),
    ):
        decision = run(req(), facts)
        assert decision.action.startswith("DEFER_IF_PERMIT 4.")
        assert not decision.passes


# --- sender (submission) ------------------------------------------------------------------


def sub(**attrs: str) -> dict[str, str]:
    return req(sasl_username="alice", recipient="x@elsewhere.test", **attrs)


@pytest.mark.parametrize(
    "sender, owner, action",
    [
        ("alice@example.org", ALICE, "DUNNO"),
        ("ALICE.Liddell@example.org", ALICE, "DUNNO"),
        ("alice+lists@example.org", ALICE, "DUNNO"),
        ("", None, NULL_SENDER),  # a user does not send bounces
        ("bob@example.org", ALICE, NOT_OWNED),
        ("alice@example.org", NOT_FOUND, NOT_OWNED),
        (
            "alice@example.org",
            LDAP_DOWN,
            "DEFER_IF_PERMIT 4.4.3 sender address verification temporarily unavailable "
            "(directory), try again later",
        ),
    ],
)
def test_sender_rules(sender: str, owner: User | Outage | None, action: str) -> None:
    assert run(sub(sender=sender), Facts(login_user=owner)).action == action


@pytest.mark.parametrize(
    "alias, action",
    [
        (Expansion(("alice@example.org", "bob@example.org")), "DUNNO"),  # alice is a member
        (Expansion(("bob@example.org",), ("alice@example.org",)), NOT_OWNED),
        (Expansion(problem="loop: x -> x"), NOT_OWNED),
        (None, NOT_OWNED),  # not an alias at all
    ],
)
def test_sending_as_an_alias(alias: Expansion | None, action: str) -> None:
    facts = Facts(login_user=ALICE, sender_alias=alias)
    assert run(sub(sender="team@example.org"), facts).action == action


def test_forged_sender_refused_before_recipient_is_considered() -> None:
    request = req(sasl_username="alice", sender="bob@example.org")
    facts = Facts(login_user=ALICE, recipient_user=ALICE, mailbox=True)
    assert run(request, facts).reason == "sender_not_owned"


def test_unauthenticated_outside_sender_is_not_checked() -> None:
    request = req(sender="bob@elsewhere.test", recipient="x@elsewhere.test")
    assert run(request, Facts()).action == "DUNNO"


def test_unauthenticated_local_sender_is_refused() -> None:
    request = req(sender="bob@example.org", recipient="x@elsewhere.test")
    assert run(request, Facts()) == Decision(LOCAL_SENDER, "local_sender_without_login")


# --- aliases as recipients ------------------------------------------------------------------

BOB = User("bob", ("bob@example.org",))
OK = MemberCheck("alice@example.org", ALICE, True)
NEVER = MemberCheck("bob@example.org", BOB, False)
GONE = MemberCheck("ghost@example.org", NOT_FOUND)
DOWN = MemberCheck("bob@example.org", LDAP_DOWN)
FULL_MEMBER = MemberCheck("bob@example.org", BOB, FULL)


@pytest.mark.parametrize(
    "alias, members, action, reason",
    [
        (Expansion(("alice@example.org",)), (OK,), "DUNNO", "alias_ok"),
        (Expansion((), ("x@elsewhere.test",)), (), "DUNNO", "alias_ok"),
        (Expansion(("a", "b")), (OK, NEVER), "DUNNO", "alias_partly_deliverable"),
        (Expansion(("b",), ("x@elsewhere.test",)), (NEVER,), "DUNNO", "alias_partly_deliverable"),
        (Expansion(("b", "g")), (NEVER, GONE), ALIAS_EMPTY, "alias_without_deliverable_member"),
        (Expansion(), (), ALIAS_EMPTY, "alias_without_deliverable_member"),
        (Expansion(("b", "g")), (DOWN, GONE), "DEFER_IF_PERMIT", "ldap_unavailable"),
        (Expansion(("b",)), (FULL_MEMBER,), "452 4.2.2", "over_quota"),
        (
            Expansion(problem="loop: a -> a"),
            (),
            "550 5.4.6 alias misconfigured (loop: a -> a)",
            "alias_misconfigured",
        ),
        (LDAP_DOWN, (), "DEFER_IF_PERMIT", "ldap_unavailable"),
    ],
)
def test_alias_rules(
    alias: Expansion | Outage, members: tuple[MemberCheck, ...], action: str, reason: str
) -> None:
    facts = Facts(recipient_user=NOT_FOUND, recipient_alias=alias, members=members)
    decision = run(req(recipient="team@example.org"), facts)
    assert decision.action.startswith(action) and decision.reason == reason, decision


# --- rate limits --------------------------------------------------------------------------

LIMITS = RateLimitConfig(window=60, sasl_user=RateLimits(2, 10), client_address=RateLimits(0, 5))


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"sasl_username": "alice"}, ("sasl_user:alice", RateLimits(2, 10))),
        ({}, ("client_address:192.0.2.1", RateLimits(0, 5))),
        ({"protocol_state": "DATA"}, None),
        ({"policy_context": "sender"}, None),  # counted once, by the recipient request
        ({"policy_context": "recipient"}, ("client_address:192.0.2.1", RateLimits(0, 5))),
        ({"client_address": ""}, None),
    ],
)
def test_rate_key(attrs: dict[str, str], expected: object) -> None:
    assert rate_key(req(**attrs), LIMITS) == expected


def test_rate_key_none_when_class_unlimited() -> None:
    assert rate_key(req(), RateLimitConfig(client_address=RateLimits(0, 0))) is None


def test_apply_rate() -> None:
    exceeded = RateExceeded("sasl_user:alice", "messages", 2, 60, 42.4)
    ok = Decision("DUNNO", "recipient_ok")
    limited = apply_rate(ok, exceeded)
    assert limited.action == (
        "450 4.7.1 Rate limit exceeded for user alice: more than 2 messages in 60 s, "
        "try again in 42 s"
    )
    assert limited.reason == "rate_limit_messages"
    assert apply_rate(ok, None) is ok
    reject = Decision("550 5.1.1 x", "no_such_user")
    assert apply_rate(reject, exceeded) is reject


@pytest.mark.parametrize(
    ("post", "action", "reason"),
    [
        (ListPost(), "DUNNO", "mailing_list"),
        (ListPost(members_only=True, sender_is_member=True), "DUNNO", "mailing_list_member"),
        (
            ListPost(members_only=True, sender_is_member=False),
            "550 5.7.1 only its members may post to this list",
            "mailing_list_non_member",
        ),
        (
            ListPost(members_only=True, sender_is_member=Outage("mailman", "refused")),
            "DEFER_IF_PERMIT 4.4.3 list membership verification temporarily unavailable "
            "(mailing lists), try again later",
            "mailman_unavailable",
        ),
    ],
)
def test_list_posts(post: ListPost, action: str, reason: str) -> None:
    """A list is a known recipient; a members-only list refuses non-members at RCPT."""
    facts = Facts(recipient_list=post)
    assert run(req(recipient="staff@example.org"), facts) == Decision(action, reason)
