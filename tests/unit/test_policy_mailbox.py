"""Mailbox answers cache: TTL per polarity, bounded size, outages never cached; each member
probed at their own mailstore."""

from __future__ import annotations

import pytest

from lmtp_bridge import BackendAddress, parse_backend_address
from milters.common.directory import User
from milters.policy.config import MailboxConfig
from milters.policy.mailbox import MailboxCache, MailboxChecker, MailboxUnavailable, probe_recipient

ALICE = User("alice", ("alice@example.org",))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttls_per_polarity() -> None:
    clock = Clock()
    cache = MailboxCache(positive_ttl=100, negative_ttl=10, max_size=10, clock=clock)
    cache.put("yes", True)
    cache.put("no", False)
    clock.now = 9.9
    assert (cache.get("yes"), cache.get("no")) == (True, False)
    clock.now = 10
    assert (cache.get("yes"), cache.get("no")) == (True, None)
    clock.now = 100
    assert cache.get("yes") is None
    assert len(cache) == 0


def test_zero_ttl_disables_caching_and_size_is_bounded() -> None:
    cache = MailboxCache(positive_ttl=100, negative_ttl=0, max_size=2, clock=Clock())
    cache.put("no", False)
    assert cache.get("no") is None
    for key in "abc":
        cache.put(key, True)
    assert len(cache) == 2
    assert cache.get("a") is None


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{uid}", "alice"),
        ("{uid}@{domain}", "alice@example.org"),
        ("{address}", "alice.l@example.org"),
        ("{local}", "alice.l"),
    ],
)
def test_probe_recipient(template: str, expected: str) -> None:
    assert probe_recipient(template, ALICE, "alice.l@example.org") == expected


def test_checker_caches_answers_but_not_outages() -> None:
    calls: list[str] = []
    answers: list[bool | Exception] = [MailboxUnavailable("down"), False, True]

    def probe(backend: BackendAddress, recipient: str) -> bool:
        calls.append(recipient)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = Clock()
    config = MailboxConfig(helo="test", positive_ttl=100, negative_ttl=5)
    checker = MailboxChecker(config, probe=probe, clock=clock)
    with pytest.raises(MailboxUnavailable):
        checker.exists(ALICE, "alice@example.org")
    assert checker.exists(ALICE, "alice@example.org") == (False, False)
    assert checker.exists(ALICE, "alice.liddell@example.org") == (False, True)  # same mailbox
    clock.now = 5
    assert checker.exists(ALICE, "alice@example.org") == (True, False)
    clock.now = 50
    assert checker.exists(ALICE, "alice@example.org") == (True, True)
    assert calls == ["alice", "alice", "alice"]


DEFAULT_STORE = parse_backend_address("unix:/run/cyrus/socket/lmtp")
CAROL = User("carol", ("carol@example.org",), route="store2.example.org:2003")


def test_a_member_with_a_mailstore_of_their_own_is_probed_there() -> None:
    asked: list[tuple[str, str]] = []

    def probe(backend: BackendAddress, recipient: str) -> bool:
        asked.append((str(backend), recipient))
        return str(backend) == "inet:store2.example.org:2003"

    config = MailboxConfig(lmtp=DEFAULT_STORE, helo="test", route_attribute="mailHost")
    checker = MailboxChecker(config, probe=probe, clock=Clock())
    assert checker.exists(CAROL, "carol@example.org") == (True, False)
    assert checker.exists(ALICE, "alice@example.org") == (False, False)
    assert asked == [
        ("inet:store2.example.org:2003", "carol"),
        ("unix:/run/cyrus/socket/lmtp", "alice"),
    ]


def test_the_cache_keeps_answers_apart_per_mailstore() -> None:
    """A member moved to another store is not answered from the old store's entry."""
    answers = {"unix:/run/cyrus/socket/lmtp": True, "inet:store2.example.org:2003": False}

    def probe(backend: BackendAddress, recipient: str) -> bool:
        return answers[str(backend)]

    config = MailboxConfig(lmtp=DEFAULT_STORE, helo="test", route_attribute="mailHost")
    checker = MailboxChecker(config, probe=probe, clock=Clock())
    before = User("carol", ("carol@example.org",))
    assert checker.exists(before, "carol@example.org") == (True, False)
    assert checker.exists(CAROL, "carol@example.org") == (False, False)


def test_an_unusable_mailstore_in_the_directory_defers_and_names_it() -> None:
    def probe(backend: BackendAddress, recipient: str) -> bool:
        raise AssertionError("no store should be asked")

    broken = User("dave", ("dave@example.org",), route="inet:")
    checker = MailboxChecker(MailboxConfig(helo="test"), probe=probe, clock=Clock())
    with pytest.raises(MailboxUnavailable, match="dave: unusable mailstore 'inet:'"):
        checker.exists(broken, "dave@example.org")
