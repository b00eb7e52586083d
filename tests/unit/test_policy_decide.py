"""The decision table: request attributes and lookup results in, policy action out."""

from __future__ import annotations

import pytest

from milters.policy.config import RateLimitConfig, RateLimits
from milters.policy.decide import (
    NOT_FOUND,
    Decision,
    Facts,
    Outage,
    Plan,
    User,
    apply_rate,
    base_address,
    decide,
    plan,
    rate_key,
)
from milters.policy.ratelimit import RateExceeded

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
    return decide(request, plan(request, LOCAL, delimiter), facts, delimiter)


# --- plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({}, Plan(recipient="alice@example.org")),
        ({"recipient": "Alice+News@Example.ORG"}, Plan(recipient="alice@example.org")),
        ({"recipient": "alice@example.net."}, Plan(recipient="alice@example.net")),
        ({"recipient": "someone@elsewhere.test"}, Plan()),
        ({"recipient": "postmaster"}, Plan()),
        ({"protocol_state": "DATA"}, Plan()),
        ({"protocol_state": "END-OF-MESSAGE"}, Plan()),
        ({"request": "other"}, Plan()),
        ({"sasl_username": "alice"}, Plan(login="alice", recipient="alice@example.org")),
        ({"sasl_username": "alice", "sender": ""}, Plan(recipient="alice@example.org")),
        (
            {"sasl_username": "alice", "protocol_state": "MAIL", "recipient": ""},
            Plan(login="alice"),
        ),
    ],
)
def test_plan(attrs: dict[str, str], expected: Plan) -> None:
    assert plan(req(**attrs), LOCAL, "+") == expected


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
        (
            {},
            Facts(recipient_user=NOT_FOUND),
            "550 5.1.1 <alice@example.org>: Recipient address rejected: no such user",
            "no_such_user",
        ),
        (
            {"recipient": "Alice+tag@example.org"},
            Facts(recipient_user=ALICE, mailbox=False),
            "550 5.1.1 <Alice+tag@example.org>: Recipient address rejected: mailbox not yet "
            "created (the user has never logged in)",
            "no_mailbox",
        ),
        (
            {},
            Facts(recipient_user=LDAP_DOWN),
            "DEFER_IF_PERMIT 4.4.3 <alice@example.org>: Recipient address verification "
            "temporarily unavailable (directory), try again later",
            "ldap_unavailable",
        ),
        (
            {},
            Facts(recipient_user=ALICE, mailbox=CYRUS_DOWN),
            "DEFER_IF_PERMIT 4.4.3 <alice@example.org>: Recipient address verification "
            "temporarily unavailable (mailbox store), try again later",
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
        ("", None, "DUNNO"),  # null sender: nobody is impersonated
        (
            "bob@example.org",
            ALICE,
            "553 5.7.1 <bob@example.org>: Sender address not owned by user alice",
        ),
        (
            "alice@example.org",
            NOT_FOUND,
            "553 5.7.1 <alice@example.org>: Sender address not owned by user alice",
        ),
        (
            "alice@example.org",
            LDAP_DOWN,
            "DEFER_IF_PERMIT 4.4.3 <alice@example.org>: Sender address verification "
            "temporarily unavailable (directory), try again later",
        ),
    ],
)
def test_sender_rules(sender: str, owner: User | Outage | None, action: str) -> None:
    assert run(sub(sender=sender), Facts(login_user=owner)).action == action


def test_forged_sender_refused_before_recipient_is_considered() -> None:
    request = req(sasl_username="alice", sender="bob@example.org")
    facts = Facts(login_user=ALICE, recipient_user=ALICE, mailbox=True)
    assert run(request, facts).reason == "sender_not_owned"


def test_unauthenticated_sender_is_not_checked() -> None:
    request = req(sender="bob@example.org", recipient="x@elsewhere.test")
    assert run(request, Facts()).action == "DUNNO"


# --- rate limits --------------------------------------------------------------------------

LIMITS = RateLimitConfig(window=60, sasl_user=RateLimits(2, 10), client_address=RateLimits(0, 5))


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"sasl_username": "alice"}, ("sasl_user:alice", RateLimits(2, 10))),
        ({}, ("client_address:192.0.2.1", RateLimits(0, 5))),
        ({"protocol_state": "DATA"}, None),
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
