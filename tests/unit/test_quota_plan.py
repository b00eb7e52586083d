"""The pure quota rule: directory value or default, 0 = no limit, only existing mailboxes."""

from __future__ import annotations

import pytest

from milters.quota.plan import (
    Change,
    QuotaValueError,
    changes,
    mailbox_of,
    storage_limit,
    wanted_kib,
)


@pytest.mark.parametrize(
    ("values", "default", "expected"),
    [
        ([], 0, None),  # no attribute, no default: no limit
        ([], 1024, 1024),  # no attribute: the inventory's default
        (["2048"], 1024, 2048),  # the attribute wins
        (["0"], 1024, None),  # 0 in the directory lifts the default
        ([" 512 "], 0, 512),
    ],
)
def test_wanted_limit(values: list[str], default: int, expected: int | None) -> None:
    assert wanted_kib("alice", values, default) == expected


@pytest.mark.parametrize("bad", ["-1", "1.5", "10M", "", "lots"])
def test_a_value_that_is_not_a_quota_names_the_member(bad: str) -> None:
    with pytest.raises(QuotaValueError, match=r"^alice: mailQuotaKiB .* whole number"):
        wanted_kib("alice", [bad], 0)


def test_mailbox_names_follow_cyrus_namespace() -> None:
    assert mailbox_of("alice") == "user.alice"
    assert mailbox_of("Jean.Dupont") == "user.jean^dupont"


def test_only_existing_mailboxes_whose_limit_differs_change() -> None:
    wanted = {"alice": 100, "bob": None, "carol": 50, "dave": 10}
    have = {"alice": 100, "bob": 200, "carol": None}  # dave never logged in
    assert changes(wanted, have) == [
        Change("bob", "user.bob", 200, None),
        Change("carol", "user.carol", None, 50),
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b'"user.alice" (STORAGE 12 1024)'], 1024),
        ([b"user.alice (STORAGE 12 1024 MESSAGE 3 100)"], 1024),
        ([b"user.alice (MESSAGE 3 100 STORAGE 0 50)"], 50),
        ([b"user.alice (MESSAGE 3 100)"], None),  # a root without a storage limit
        ([None], None),  # no quota root at all
        ([], None),
        ([b"user (STORAGE 1 99)"], None),  # a parent's root is not the member's own
    ],
)
def test_storage_limit_from_a_getquotaroot_answer(
    lines: list[bytes | None], expected: int | None
) -> None:
    assert storage_limit("user.alice", lines) == expected
