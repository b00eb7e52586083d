"""What to ask Mailman for, from the inventory's lists and what Mailman has now: pure, no I/O.

**Additive only.** The inventory gives each list its *initial* owners, moderators and
members; after that the list belongs to its people: members subscribe and leave themselves
and owners delegate to others through Postorius. So nothing is ever unsubscribed or demoted
here, and someone the inventory names is added once, not again after they left: the
`Ledger` remembers who the inventory already put on each list (or found there). A list
Mailman does not have (new, or lost with its database) is seeded with everyone again.

Settings are the inventory's, not the owners': `default_nonmember_action`,
`max_message_size` and `archive_policy` always, the description when the inventory gives one.
Mailman's own defaults for the last two do not suit a department: it holds every post over
40 KB (any attachment) for the owner to approve, and lets anyone on the web read the archive.

**Nested lists.** A list that is a member of another (staff@ on all@, the FAQ's case) gets
the other's posts with `To: all@example.org`, and Mailman holds them ("Message has implicit
destination") unless `all@example.org` is one of staff's `acceptable_aliases`. So every
inventory list whose posts reach another one, directly or through lists in between (all@ ->
staff@ -> board@: board@ sees `To: all@` too), gets those lists' addresses added to its
acceptable aliases; aliases the owners added in Postorius stay (additive, like people).

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
ARCHIVE_POLICIES = ("private", "public", "never")  # members only, anyone, no archive
# What Mailman 3.3 gives a new list (its default style), for a dry run's list-to-be.
NEW_LIST_SETTINGS: Mapping[str, str] = {
    "default_nonmember_action": "hold",
    "description": "",
    "max_message_size": "40",
    "archive_policy": "public",
}


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
    max_message_kb: int = 0  # larger posts are held for the owners; 0: only the server's limit
    archive_policy: str = "private"  # one of ARCHIVE_POLICIES

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
        wanted = {
            "default_nonmember_action": self.nonmember_action,
            "max_message_size": str(self.max_message_kb),
            "archive_policy": self.archive_policy,
        }
        if self.description is not None:
            wanted["description"] = self.description
        return wanted


@dataclass(frozen=True)
class ListState:
    """One list as Mailman has it: each role's addresses (lower case), its settings and its
    `acceptable_aliases` (lower case, as Mailman stores them; `^…` ones are patterns)."""

    rosters: Mapping[str, frozenset[str]]
    settings: Mapping[str, str]
    aliases: frozenset[str] = frozenset()


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
    # A person gets the list's welcome message; another list does not (it would only be
    # held there, a post from a non-member).
    welcome: bool = True

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


@dataclass(frozen=True)
class AcceptAliases:
    """Add `added` to the list's acceptable aliases. Mailman sets them only as a whole, so
    `aliases` is the full new set: the ones it has plus the added ones."""

    list_id: str
    name: str
    aliases: tuple[str, ...]  # sorted, lower case
    added: tuple[str, ...]  # the lists' addresses it lacked, in the inventory's order

    def describe(self) -> str:
        return f"add {', '.join(self.added)} to the acceptable_aliases of {self.name}"


Action = CreateDomain | CreateList | Subscribe | Configure | AcceptAliases


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
    """Domains first, then lists, then per list owners, moderators, members, settings,
    acceptable aliases."""
    lists = tuple(lists)
    upstream = upstream_lists(lists)
    list_addresses = {s.name.lower() for s in lists}
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
                    welcome = key not in list_addresses
                    actions.append(Subscribe(spec.list_id, spec.name, address, role, welcome))
            # Who the inventory names and who is (or will be) on the roster; names the
            # inventory dropped are forgotten, so naming them again adds them again.
            entry[role] = frozenset(a.lower() for a in wanted)
        next_ledger[spec.list_id] = entry
        configure = settings_change(spec, state.settings if state else NEW_LIST_SETTINGS)
        if configure is not None:
            actions.append(configure)
        aliases = state.aliases if state else frozenset()  # a new list has none
        accept = aliases_change(spec, upstream[spec.name], aliases)
        if accept is not None:
            actions.append(accept)
    return Plan(tuple(actions), tuple(left), next_ledger)


def settings_change(spec: ListSpec, have: Mapping[str, str]) -> Configure | None:
    """The attributes whose value in Mailman differs from the inventory's, or None."""
    changes = tuple(
        (attribute, have.get(attribute), wanted)
        for attribute, wanted in spec.settings().items()
        if have.get(attribute) != wanted
    )
    return Configure(spec.list_id, spec.name, changes) if changes else None


def upstream_lists(lists: Iterable[ListSpec]) -> dict[str, tuple[str, ...]]:
    """For each list (by name), the inventory lists whose posts reach it: the lists it is a
    member of (`members` compared without case), the lists those are members of, and so on;
    nearest first, then in the inventory's order. A list is never its own upstream, even
    in a loop (Mailman always accepts a list's own posting address)."""
    lists = tuple(lists)
    parents = {
        spec.name: [p.name for p in lists if spec.name in (m.lower() for m in p.members)]
        for spec in lists
    }
    upstream: dict[str, tuple[str, ...]] = {}
    for spec in lists:
        found: dict[str, None] = {}
        wave = parents[spec.name]
        while wave:
            new = [p for p in wave if p != spec.name and p not in found]
            found |= dict.fromkeys(new)
            wave = [g for p in new for g in parents[p]]
        upstream[spec.name] = tuple(found)
    return upstream


def aliases_change(
    spec: ListSpec, upstream: Iterable[str], have: frozenset[str]
) -> AcceptAliases | None:
    """The upstream lists' addresses missing from the list's acceptable aliases, or None.
    Only exact aliases count: a `^…` pattern that happens to match is kept, not trusted."""
    added = tuple(name for name in upstream if name.lower() not in have)
    if not added:
        return None
    aliases = tuple(sorted(have | {name.lower() for name in added}))
    return AcceptAliases(spec.list_id, spec.name, aliases, added)


def _unique(addresses: Iterable[str]) -> list[str]:
    """First spelling of each address, compared without case (as Mailman compares them)."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())
