"""The blocking half of a decision: perform what `decide.plan()` asked for, in a worker thread.

Backend failures become `Outage` values here, so `decide()` sees every outcome as data and the
server never has to know which exception a backend raises.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol

from milters.common.ldapconn import DirectoryUnavailable
from milters.common.mailman import MailmanError
from milters.policy.aliases import MAX_DEPTH, Expansion, expand
from milters.policy.decide import (
    FULL,
    NOT_FOUND,
    AliasLookup,
    Facts,
    ListPost,
    MailboxState,
    MemberCheck,
    Outage,
    Plan,
    User,
    UserLookup,
)
from milters.policy.mailbox import MailboxFull, MailboxUnavailable

__all__ = ["AliasRules", "Backends", "Directory", "Gathered", "Mailboxes", "gather"]


class Directory(Protocol):
    def find_by_address(self, address: str) -> User | None: ...
    def find_by_login(self, login: str) -> User | None: ...
    def alias_members(self, address: str) -> tuple[str, ...] | None: ...
    def close(self) -> None: ...


class Mailboxes(Protocol):
    def exists(self, user: User, address: str) -> tuple[bool, bool]: ...
    def close(self) -> None: ...


class Lists(Protocol):
    def backend(self, address: str) -> object | None: ...


class Rosters(Protocol):
    def is_member(self, list_address: str, sender: str) -> bool: ...


@dataclass(frozen=True)
class MailingLists:
    """Mailman's list addresses, and which lists take posts from their members only."""

    addresses: Lists
    members_only: frozenset[str] = frozenset()
    rosters: Rosters | None = None  # needed when members_only is not empty


@dataclass(frozen=True)
class Backends:
    directory: Directory
    mailboxes: Mailboxes
    lists: MailingLists | None = None  # None: no lists

    def close(self) -> None:
        self.directory.close()
        self.mailboxes.close()


@dataclass(frozen=True)
class Gathered:
    facts: Facts
    mailbox_cached: bool | None = None  # None: the mailbox was not asked about

    @property
    def outages(self) -> list[str]:
        f = self.facts
        found = [f.login_user, f.recipient_user, f.mailbox, f.sender_alias, f.recipient_alias]
        found += [m.outage for m in f.members]
        return [f"{o.backend}: {o.detail}" for o in found if isinstance(o, Outage)]


def _user(lookup: UserLookup | User | None) -> UserLookup:
    return NOT_FOUND if lookup is None else lookup


@dataclass(frozen=True)
class AliasRules:
    """What alias expansion needs to know besides the directory."""

    local_domains: Collection[str] = ()
    max_depth: int = MAX_DEPTH


def _find(directory: Directory, address: str) -> UserLookup:
    try:
        return _user(directory.find_by_address(address))
    except DirectoryUnavailable as exc:
        return Outage("ldap", str(exc))


def _mailbox(mailboxes: Mailboxes, user: User, address: str) -> tuple[MailboxState, bool]:
    try:
        return mailboxes.exists(user, address)
    except MailboxFull:
        return FULL, False
    except MailboxUnavailable as exc:
        return Outage("cyrus", str(exc)), False


def _alias(directory: Directory, address: str, rules: AliasRules) -> AliasLookup:
    try:
        return expand(address, directory.alias_members, rules.local_domains, rules.max_depth)
    except DirectoryUnavailable as exc:
        return Outage("ldap", str(exc))


def _member(backends: Backends, address: str) -> MemberCheck:
    user = _find(backends.directory, address)
    if not isinstance(user, User):
        return MemberCheck(address, user)
    return MemberCheck(address, user, _mailbox(backends.mailboxes, user, address)[0])


def _list_post(lists: MailingLists, wanted: Plan) -> ListPost:
    assert wanted.recipient is not None
    address = wanted.recipient.lower()
    if address not in lists.members_only or lists.rosters is None:
        return ListPost()
    try:
        member = lists.rosters.is_member(address, wanted.envelope_sender)
    except MailmanError as exc:
        return ListPost(True, Outage("mailman", str(exc)))
    return ListPost(True, member)


def gather(wanted: Plan, backends: Backends, rules: AliasRules | None = None) -> Gathered:
    rules = rules or AliasRules()
    directory = backends.directory
    facts = Facts()
    cached: bool | None = None
    if wanted.login is not None:
        try:
            login_user = _user(directory.find_by_login(wanted.login))
        except DirectoryUnavailable as exc:
            login_user = Outage("ldap", str(exc))
        sender_alias: AliasLookup = None
        owns = isinstance(login_user, User) and wanted.sender in login_user.addresses
        if isinstance(login_user, User) and not owns and wanted.sender is not None:
            sender_alias = _alias(directory, wanted.sender, rules)
        facts = Facts(login_user=login_user, sender_alias=sender_alias)
    lists = backends.lists
    recipient = wanted.recipient
    if recipient and lists is not None and lists.addresses.backend(recipient) is not None:
        return Gathered(replace(facts, recipient_list=_list_post(lists, wanted)))  # for Mailman
    if wanted.recipient is not None:
        user = _find(directory, wanted.recipient)
        if isinstance(user, User):
            mailbox, cached = _mailbox(backends.mailboxes, user, wanted.recipient)
            facts = replace(facts, recipient_user=user, mailbox=mailbox)
        else:
            alias = _alias(directory, wanted.recipient, rules) if user is NOT_FOUND else None
            members: tuple[MemberCheck, ...] = ()
            if isinstance(alias, Expansion) and alias.problem is None:
                members = tuple(_member(backends, m) for m in alias.local)
            facts = replace(facts, recipient_user=user, recipient_alias=alias, members=members)
    return Gathered(facts, cached)
