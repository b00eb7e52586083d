"""Recipient → backend: override, then domain, then default; otherwise a NoRoute, never a guess."""

from __future__ import annotations

import pytest

from lmtp_bridge.address import BackendAddressError, InetAddress, UnixAddress
from lmtp_bridge.outcome import NotAttemptedReason
from lmtp_bridge.routing import NoRoute, Router, mail_host_backend

LOCAL = UnixAddress("/run/cyrus/socket/lmtp")
MAIL2 = InetAddress("mail2.example.org", 24)
MAIL3 = InetAddress("mail3.example.org", 24)


def test_default_only() -> None:
    router = Router("unix:/run/cyrus/socket/lmtp")
    assert router.route("alice@example.org") == LOCAL
    assert router.route("postmaster") == LOCAL


def test_domain_map_is_case_insensitive_and_beats_default() -> None:
    router = Router(LOCAL, {"Example.NET.": "inet:mail2.example.org:24"})
    assert router.route("bob@example.net") == MAIL2
    assert router.route("bob@EXAMPLE.net") == MAIL2
    assert router.route("bob@sub.example.net") == LOCAL  # exact domains only
    assert router.route("bob@example.org") == LOCAL


def test_override_mapping_beats_domain() -> None:
    router = Router(
        LOCAL, {"example.net": MAIL2}, {"carol@example.net": "inet:mail3.example.org:24"}
    )
    assert router.route("carol@example.net") == MAIL3
    assert router.route("dave@example.net") == MAIL2


def test_override_callable_none_falls_through() -> None:
    seen: list[str] = []

    def mail_host(rcpt: str) -> str | None:
        seen.append(rcpt)
        return "inet:mail3.example.org:24" if rcpt.startswith("carol") else None

    router = Router(LOCAL, override=mail_host)
    assert router.route("carol@example.org") == MAIL3
    assert router.route("dave@example.org") == LOCAL
    assert seen == ["carol@example.org", "dave@example.org"]


def test_failed_lookup_is_no_route_not_the_default() -> None:
    def broken(rcpt: str) -> str | None:
        raise TimeoutError("LDAP did not answer")

    route = Router(LOCAL, override=broken).route("alice@example.org")
    assert isinstance(route, NoRoute)
    assert "backend lookup failed: TimeoutError: LDAP did not answer" in route.reason
    assert route.outcome().reason is NotAttemptedReason.NO_ROUTE


def test_unusable_override_value_is_no_route() -> None:
    route = Router(LOCAL, override={"a@x": "mail2.example.org"}).route("a@x")
    assert isinstance(route, NoRoute)
    assert "per-recipient backend is unusable" in route.reason
    assert "no type prefix" in route.reason


@pytest.mark.parametrize(
    ("recipient", "needle"),
    [
        ("alice@example.org", "domain 'example.org'"),
        ("postmaster", "a recipient without a domain"),
    ],
)
def test_no_default_means_no_route(recipient: str, needle: str) -> None:
    route = Router(None, {"example.net": MAIL2}).route(recipient)
    assert isinstance(route, NoRoute)
    assert needle in route.reason
    assert "no default backend" in route.reason
    assert "no route" in str(route.outcome())


def test_bad_config_fails_at_construction() -> None:
    with pytest.raises(BackendAddressError):
        Router("localhost:24")
    with pytest.raises(BackendAddressError):
        Router(LOCAL, {"example.net": "inet:mail2"})


def test_plan_groups_by_backend_in_order() -> None:
    router = Router(
        None,
        {"example.org": LOCAL, "example.net": MAIL2},
        {"carol@example.org": MAIL2},
    )
    plan = router.plan(
        ["a@example.org", "b@example.net", "carol@example.org", "x@elsewhere", "a@example.org"]
    )
    assert dict(plan.groups) == {
        LOCAL: ("a@example.org",),
        MAIL2: ("b@example.net", "carol@example.org"),
    }
    assert list(plan.unrouted) == ["x@elsewhere"]


@pytest.mark.parametrize("recipients", [[], ["a@example.org"]])
def test_plan_zero_and_one(recipients: list[str]) -> None:
    plan = Router(LOCAL).plan(recipients)
    assert sum(len(g) for g in plan.groups.values()) == len(recipients)
    assert not plan.unrouted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("store2.example.org", InetAddress("store2.example.org", 24)),
        ("store2.example.org:2003", InetAddress("store2.example.org", 2003)),
        ("inet:10.0.0.5:24", InetAddress("10.0.0.5", 24)),
        ("lmtp:unix:/run/cyrus/socket/lmtp", UnixAddress("/run/cyrus/socket/lmtp")),
        ("[2001:db8::5]:24", InetAddress("2001:db8::5", 24)),
        ("  store3.example.org  ", InetAddress("store3.example.org", 24)),
    ],
)
def test_mail_host_backend(value: str, expected: object) -> None:
    assert mail_host_backend(value) == expected


@pytest.mark.parametrize("value", ["", "inet:host", "smtp:x:25", "a b", "store:port"])
def test_mail_host_backend_refuses_garbage(value: str) -> None:
    with pytest.raises(BackendAddressError):
        mail_host_backend(value)


def test_a_garbage_mail_host_is_no_route_not_a_guess() -> None:
    router = Router(LOCAL, override=lambda r: mail_host_backend("smtp:x:25"))
    assert isinstance(router.route("alice@example.org"), NoRoute)
