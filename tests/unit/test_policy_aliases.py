"""Alias expansion rules (pure, with a dict as the directory)."""

from __future__ import annotations

import pytest

from milters.policy.aliases import Expansion, expand

LOCAL = {"example.org", "example.net"}
TABLE: dict[str, tuple[str, ...]] = {
    "postmaster@example.org": ("alice@example.org",),
    "staff@example.org": ("Alice@Example.org", "team@example.org", "out@else.test"),
    "team@example.org": ("bob@example.org", "<carol@example.net>", "alice@example.org"),
    "diamond@example.org": ("team@example.org", "staff@example.org"),
    "self@example.org": ("self@example.org",),
    "a@example.org": ("b@example.org",),
    "b@example.org": ("c@example.org",),
    "c@example.org": ("a@example.org",),
    "empty@example.org": ("", " "),
    "chain0@example.org": ("chain1@example.org",),
    "chain1@example.org": ("chain2@example.org",),
    "chain2@example.org": ("chain3@example.org",),
    "chain3@example.org": ("dave@example.org",),
}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("alice@example.org", None),
        ("postmaster@example.org", Expansion(("alice@example.org",))),
        (
            "staff@example.org",
            Expansion(
                ("alice@example.org", "bob@example.org", "carol@example.net"), ("out@else.test",)
            ),
        ),
        (
            "diamond@example.org",
            Expansion(
                ("bob@example.org", "carol@example.net", "alice@example.org"), ("out@else.test",)
            ),
        ),
        (
            "self@example.org",
            Expansion(problem="loop: self@example.org -> self@example.org"),
        ),
        (
            "a@example.org",
            Expansion(
                problem="loop: a@example.org -> b@example.org -> c@example.org -> a@example.org"
            ),
        ),
        ("empty@example.org", Expansion()),
        ("chain0@example.org", Expansion(("dave@example.org",))),
    ],
)
def test_expand(address: str, expected: Expansion | None) -> None:
    assert expand(address, TABLE.get, LOCAL) == expected


def test_depth_is_bounded() -> None:
    found = expand("chain0@example.org", TABLE.get, LOCAL, max_depth=2)
    assert found is not None and found.problem is not None
    assert found.problem.startswith("deeper than 2 levels")


def test_outside_members_are_not_looked_up() -> None:
    asked: list[str] = []

    def members_of(address: str) -> tuple[str, ...] | None:
        asked.append(address)
        return TABLE.get(address)

    expand("staff@example.org", members_of, LOCAL)
    assert "out@else.test" not in asked
