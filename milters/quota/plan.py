"""Which Cyrus quotas to change, from what LDAP wants and what Cyrus has: pure, no I/O.

Cyrus is the one that enforces a quota, so the directory's value only counts once it is in
Cyrus. Mailboxes that do not exist yet are left out: Cyrus gives them the default
(`autocreate_quota`) at first login, and the next run corrects it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NO_LIMIT = None  # Cyrus has no quota root: the mailbox may grow without limit


@dataclass(frozen=True)
class Change:
    """One mailbox whose storage limit (KiB, None = no limit) must change."""

    uid: str
    mailbox: str
    have_kib: int | None
    want_kib: int | None


class QuotaValueError(ValueError):
    """A directory value that is not a quota; the text says which and why."""

    def __init__(self, uid: str, value: str) -> None:
        super().__init__(f"{uid}: mailQuotaKiB {value!r} is not a whole number of KiB >= 0")
        self.uid = uid
        self.value = value


def wanted_kib(uid: str, values: list[str], default_kib: int) -> int | None:
    """The limit a member should have: their attribute, else the default; 0 means none."""
    if not values:
        kib = default_kib
    else:
        text = values[0].strip()
        if not text.isdigit():
            raise QuotaValueError(uid, values[0])
        kib = int(text)
    return kib if kib > 0 else NO_LIMIT


def mailbox_of(uid: str) -> str:
    """The IMAP name of a member's INBOX in Cyrus's default (netnews) namespace, where a dot
    separates folders, so Cyrus stores dots in a login name as `^`."""
    return "user." + uid.lower().replace(".", "^")


def changes(wanted: dict[str, int | None], have: dict[str, int | None]) -> list[Change]:
    """The members whose mailbox exists (a key of `have`) and whose limit differs."""
    return [
        Change(uid, mailbox_of(uid), have[uid], want)
        for uid, want in sorted(wanted.items())
        if uid in have and have[uid] != want
    ]


_QUOTA_LINE = re.compile(rb'^\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))\s+\(([^)]*)\)\s*$')


def storage_limit(mailbox: str, quota_lines: list[bytes | None]) -> int | None:
    """The STORAGE limit (KiB) of the quota root named `mailbox`, from the untagged
    `QUOTA root (RESOURCE usage limit ...)` lines of a GETQUOTAROOT answer; None if it has none.
    A limit on some other root (a parent's) is not the member's own and does not count."""
    for line in quota_lines:
        match = _QUOTA_LINE.match(line or b"")
        if match is None:
            continue
        quoted, bare, resources = match.groups()
        root = (quoted if quoted is not None else bare).decode("utf-8", "replace")
        if root.replace('\\"', '"') != mailbox:
            continue
        words = resources.split()
        for i in range(0, len(words) - 2, 3):
            if words[i].upper() == b"STORAGE":
                return int(words[i + 2])
    return NO_LIMIT
