"""Members-only lists: one roster fetch per list per ttl, whatever the traffic."""

from __future__ import annotations

import pytest

from milters.common.mailman import MailmanError
from milters.policy.rosters import Rosters, list_id


class FakeRest:
    """Stands in for Mailman's REST API (the real one is in tests/integration)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.down = False

    def roster(self, lid: str, role: str) -> set[str]:
        assert role == "member"
        self.asked.append(lid)
        if self.down:
            raise MailmanError(
                "GET", f"http://127.0.0.1:8001/3.1/lists/{lid}/roster/member", None, "refused"
            )
        return {"alice@example.org"}


def rosters(rest: FakeRest, clock: list[float]) -> Rosters:
    return Rosters(rest, 60.0, lambda: clock[0])  # type: ignore[arg-type]


def test_list_id_is_mailmans() -> None:
    assert list_id("Board@Example.org") == "board.example.org"


def test_a_roster_is_reused_until_it_is_old() -> None:
    rest, clock = FakeRest(), [0.0]
    members = rosters(rest, clock)
    assert members.is_member("board@example.org", "Alice@Example.org")
    assert not members.is_member("board@example.org", "mallory@example.net")
    clock[0] = 59.0
    assert members.is_member("board@example.org", "alice@example.org")
    assert rest.asked == ["board.example.org"]
    clock[0] = 61.0
    members.is_member("board@example.org", "alice@example.org")
    assert rest.asked == ["board.example.org"] * 2


def test_mailman_down_is_an_error_not_a_guess() -> None:
    rest, clock = FakeRest(), [0.0]
    rest.down = True
    with pytest.raises(MailmanError):
        rosters(rest, clock).is_member("board@example.org", "alice@example.org")
