"""What to ask Mailman for, from the inventory's lists and what Mailman has now: pure, no I/O.

**Additive only.** The inventory gives each list its *initial* owners, moderators and
members; after that the list belongs to its people: members subscribe and leave themselves
and owners delegate to others through Postorius. So nothing is ever unsubscribed or demoted
here, and someone the inventory names is added once, not again after they left: the
`Ledger` remembers who the inventory already put on each list (or found there). A list
Mailman does not have (new, or lost with its database) is seeded with everyone again.

Settings are the inventory's, not the owners': `default_nonmember_action` always, the
description when the inventory gives one.

Members are added pre-verified, pre-confirmed and pre-approved (the admin vouches for the
inventory's addresses; otherwise nobody would be on the list until each clicked a link),
and get the list's welcome message, which tells them they are on it and how to leave in
Postorius. Because of the ledger that happens once per person and list, never per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ROLES = ("owner", "moderator", "member")  # the order they are added in
NONMEMBER_ACTIONS = ("hold", "reject", "discard", "accept")
# What Mailman 3.3 gives a new list (its default style), for a dry run's list-to-be.
NEW_LIST_SETTINGS: Mapping[str, str] = {"default_nonmember_action": "hold", "description": ""}


@dataclass(frozen=True)
class DomainSpec:
    """A mail domain Mailman serves lists for. `web_host` is Postorius's (its Django site);
    Mailman's core has had no web host since 3.1, so only the web side uses it."""

    mail_host: str
    web_host: str | None = None


@dataclass(frozen=True)
class ListSpec:
    """One list as the inventory wants it; addresses in the inventory's spelling."""

    name: str  # posting address, lower case: staff@example.org
    owners: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    description: str | None = None  # None: left as the owners set it
    nonmember_action: str = "hold"
    members_only: bool = False  # refused at RCPT by the policy service; not Mailman's

    @property
    def mail_host(self) -> str:
        return self.name.rpartition("@")[2]

    @property
    def list_id(self) -> str:
        """Mailman's list id: `staff@example.org` -> `staff.example.org`."""
        local, _, domain = self.name.rpartition("@")
        return f"{local}.{domain}"

    def addresses(self, role: str) -> tuple[str, ...]:
        return {"owner": self.owners, "moderator": self.moderators, "member": self.members}[role]

    def settings(self) -> dict[str, str]:
        """The list configuration attributes the inventory decides."""
        wanted = {"default_nonmember_action": self.nonmember_action}
        if self.description is not None:
            wanted["description"] = self.description
        return wanted


@dataclass(frozen=True)
class ListState:
    """One list as Mailman has it: each role's addresses (lower case) and its settings."""

    rosters: Mapping[str, frozenset[str]]
    settings: Mapping[str, str]


@dataclass(frozen=True)
class MailmanState:
    domains: frozenset[str]
    lists: Mapping[str, ListState]  # by list id


Ledger = Mapping[str, Mapping[str, frozenset[str]]]
"""list id -> role -> the addresses (lower case) the inventory already put on that roster."""


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateDomain:
    mail_host: str

    def describe(self) -> str:
        return f"create domain {self.mail_host}"


@dataclass(frozen=True)
class CreateList:
    name: str
    list_id: str

    def describe(self) -> str:
        return f"create list {self.name}"


@dataclass(frozen=True)
class Subscribe:
    list_id: str
    name: str
    address: str  # as the inventory spells it
    role: str

    def describe(self) -> str:
        return f"add {self.role} {self.address} to {self.name}"


@dataclass(frozen=True)
class Configure:
    list_id: str
    name: str
    changes: tuple[tuple[str, str | None, str], ...]  # (attribute, now, wanted)

    @property
    def values(self) -> dict[str, str]:
        return {attribute: wanted for attribute, _, wanted in self.changes}

    def describe(self) -> str:
        parts = ", ".join(f"{a} {now!r} -> {want!r}" for a, now, want in self.changes)
        return f"set {parts} on {self.name}"


Action = CreateDomain | CreateList | Subscribe | Configure


@dataclass(frozen=True)
class Left:
    """Someone the inventory put on a list who is no longer on it: not added again."""

    name: str
    address: str
    role: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    left: tuple[Left, ...] = ()
    ledger: Ledger = field(default_factory=dict)  # the ledger once every action succeeded


# --- planning --------------------------------------------------------------------------------


def plan(
    domains: Iterable[DomainSpec],
    lists: Iterable[ListSpec],
    have: MailmanState,
    ledger: Ledger,
) -> Plan:
    """Domains first, then lists, then per list owners, moderators, members, settings."""
    lists = tuple(lists)
    wanted_domains = dict.fromkeys([d.mail_host for d in domains] + [s.mail_host for s in lists])
    actions: list[Action] = [CreateDomain(d) for d in wanted_domains if d not in have.domains]
    actions += [CreateList(s.name, s.list_id) for s in lists if s.list_id not in have.lists]
    left: list[Left] = []
    # Lists the inventory no longer names keep their entry, should it name them again.
    next_ledger: dict[str, Mapping[str, frozenset[str]]] = dict(ledger)
    for spec in lists:
        state = have.lists.get(spec.list_id)
        # A list Mailman lacks is seeded afresh, whatever the ledger says about an old one.
        seeded = ledger.get(spec.list_id, {}) if state is not None else {}
        entry: dict[str, frozenset[str]] = {}
        for role in ROLES:
            on_roster = state.rosters.get(role, frozenset()) if state else frozenset()
            before = seeded.get(role, frozenset())
            wanted = _unique(spec.addresses(role))
            for address in wanted:
                key = address.lower()
                if key in on_roster:
                    continue
                if key in before:
                    left.append(Left(spec.name, address, role))
                else:
                    actions.append(Subscribe(spec.list_id, spec.name, address, role))
            # Who the inventory names and who is (or will be) on the roster; names the
            # inventory dropped are forgotten, so naming them again adds them again.
            entry[role] = frozenset(a.lower() for a in wanted)
        next_ledger[spec.list_id] = entry
        configure = settings_change(spec, state.settings if state else NEW_LIST_SETTINGS)
        if configure is not None:
            actions.append(configure)
    return Plan(tuple(actions), tuple(left), next_ledger)


def settings_change(spec: ListSpec, have: Mapping[str, str]) -> Configure | None:
    """The attributes whose value in Mailman differs from the inventory's, or None."""
    changes = tuple(
        (attribute, have.get(attribute), wanted)
        for attribute, wanted in spec.settings().items()
        if have.get(attribute) != wanted
    )
    return Configure(spec.list_id, spec.name, changes) if changes else None


def _unique(addresses: Iterable[str]) -> list[str]:
    """First spelling of each address, compared without case (as Mailman compares them)."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())
