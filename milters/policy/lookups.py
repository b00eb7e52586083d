"""The blocking half of a decision: perform what `decide.plan()` asked for, in a worker thread.

Backend failures become `Outage` values here, so `decide()` sees every outcome as data and the
server never has to know which exception a backend raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from milters.policy.decide import NOT_FOUND, Facts, Outage, Plan, User, UserLookup
from milters.policy.directory import DirectoryUnavailable
from milters.policy.mailbox import MailboxUnavailable

__all__ = ["Backends", "Directory", "Gathered", "Mailboxes", "gather"]


class Directory(Protocol):
    def find_by_address(self, address: str) -> User | None: ...
    def find_by_login(self, login: str) -> User | None: ...
    def close(self) -> None: ...


class Mailboxes(Protocol):
    def exists(self, user: User, address: str) -> tuple[bool, bool]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Backends:
    directory: Directory
    mailboxes: Mailboxes

    def close(self) -> None:
        self.directory.close()
        self.mailboxes.close()


@dataclass(frozen=True)
class Gathered:
    facts: Facts
    mailbox_cached: bool | None = None  # None: the mailbox was not asked about

    @property
    def outages(self) -> list[str]:
        found = (self.facts.login_user, self.facts.recipient_user, self.facts.mailbox)
        return [f"{o.backend}: {o.detail}" for o in found if isinstance(o, Outage)]


def _user(lookup: UserLookup | User | None) -> UserLookup:
    return NOT_FOUND if lookup is None else lookup


def gather(wanted: Plan, backends: Backends) -> Gathered:
    login_user: UserLookup | None = None
    recipient_user: UserLookup | None = None
    mailbox: bool | Outage | None = None
    cached: bool | None = None
    if wanted.login is not None:
        try:
            login_user = _user(backends.directory.find_by_login(wanted.login))
        except DirectoryUnavailable as exc:
            login_user = Outage("ldap", str(exc))
    if wanted.recipient is not None:
        try:
            recipient_user = _user(backends.directory.find_by_address(wanted.recipient))
        except DirectoryUnavailable as exc:
            recipient_user = Outage("ldap", str(exc))
        if isinstance(recipient_user, User):
            try:
                mailbox, cached = backends.mailboxes.exists(recipient_user, wanted.recipient)
            except MailboxUnavailable as exc:
                mailbox = Outage("cyrus", str(exc))
    return Gathered(Facts(login_user, recipient_user, mailbox), cached)
