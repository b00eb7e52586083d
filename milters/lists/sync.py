"""One pass of `mailglue lists`: read what Mailman has, plan (plan.py), ask Mailman for each
change, remember who the inventory put on which list. Mailman's REST API and the state file
are the only I/O.

A change Mailman refuses (a banned address, say) is logged and counted, and the others still
happen; Mailman unreachable, refusing our login or failing with a 5xx stops the pass
(MailmanError escapes) after saving what was done.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from milters.common.jsonlog import EventLog
from milters.common.mailman import Joined, MailmanError, MailmanRest
from milters.lists.config import ListsConfig
from milters.lists.plan import (
    ROLES,
    AcceptAliases,
    Action,
    Configure,
    CreateDomain,
    CreateList,
    Ledger,
    ListState,
    MailmanState,
    Plan,
    Subscribe,
    plan,
)

# what plan.py compares
SETTINGS = ("default_nonmember_action", "description", "max_message_size", "archive_policy")


class StateFileError(Exception):
    """The state file exists but cannot be read: better stop than add back everyone who left."""


@dataclass
class Summary:
    lists: int
    dry_run: bool = False
    domains_created: int = 0
    lists_created: int = 0
    added: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    settings_changed: int = 0
    aliases_changed: int = 0  # lists whose acceptable_aliases got their upstream lists
    pending: int = 0
    left: int = 0
    problems: int = 0
    planned: list[str] = field(default_factory=list)  # every action, described

    @property
    def changed(self) -> int:
        return (
            self.domains_created
            + self.lists_created
            + sum(self.added.values())
            + self.settings_changed
            + self.aliases_changed
        )

    def count(self, action: Action) -> None:
        if isinstance(action, CreateDomain):
            self.domains_created += 1
        elif isinstance(action, CreateList):
            self.lists_created += 1
        elif isinstance(action, Subscribe):
            self.added[action.role] += 1
        elif isinstance(action, AcceptAliases):
            self.aliases_changed += 1
        else:
            self.settings_changed += 1

    def line(self) -> str:
        """One line; `changed: N` last, for Ansible's changed_when (`changed: 0` = nothing)."""
        a = self.added
        counts = (
            f"{self.domains_created} domains and {self.lists_created} lists",
            f"{a['owner']} owners, {a['moderator']} moderators and {a['member']} members",
            f"{self.settings_changed} lists' settings and "
            f"{self.aliases_changed} lists' acceptable_aliases",
        )
        notes = "".join(
            f", {n} {what}"
            for n, what in (
                (self.pending, "pending (Mailman awaits a confirmation)"),
                (self.left, "not added again (left since the inventory added them)"),
                (self.problems, "refused by Mailman (see the log)"),
            )
            if n
        )
        if self.dry_run:
            return (
                f"lists (dry run): {self.lists} lists; would create {counts[0]}, "
                f"add {counts[1]}, change {counts[2]}{notes}; "
                f"changed: 0, would change: {self.changed}"
            )
        return (
            f"lists: {self.lists} lists; created {counts[0]}, added {counts[1]}, "
            f"changed {counts[2]}{notes}; changed: {self.changed}"
        )


class ListsSync:
    def __init__(self, config: ListsConfig, log: EventLog, mailman: MailmanRest) -> None:
        self.config = config
        self.log = log
        self.mailman = mailman

    def run(self, dry_run: bool = False) -> Summary:
        c = self.config
        ledger = load_ledger(c.state_file)
        summary = Summary(len(c.lists), dry_run=dry_run)
        todo = plan(c.domains, c.lists, self.read(), ledger)
        self._report_left(todo, summary)
        if dry_run:
            for action in todo.actions:
                summary.count(action)
                summary.planned.append(action.describe())
                self._emit_done(action, dry_run=True)
        else:
            self._apply(todo, ledger, summary)
        self.log.emit(
            "lists_summary",
            lists=summary.lists,
            domains_created=summary.domains_created,
            lists_created=summary.lists_created,
            added=summary.added,
            settings_changed=summary.settings_changed,
            aliases_changed=summary.aliases_changed,
            pending=summary.pending,
            left=summary.left,
            problems=summary.problems,
            changed=summary.changed,
            dry_run=dry_run,
        )
        return summary

    def read(self) -> MailmanState:
        """Mailman's domains, and for the inventory's lists their rosters, settings and
        acceptable aliases."""
        domains = frozenset(self.mailman.domains())
        existing = {m.list_id for m in self.mailman.lists()}
        lists: dict[str, ListState] = {}
        for spec in self.config.lists:
            if spec.list_id not in existing:
                continue
            config = self.mailman.config(spec.list_id)
            lists[spec.list_id] = ListState(
                rosters={
                    role: frozenset(self.mailman.roster(spec.list_id, role)) for role in ROLES
                },
                settings={k: str(config[k]) for k in SETTINGS if config.get(k) is not None},
                aliases=frozenset(str(a).lower() for a in config.get("acceptable_aliases") or ()),
            )
        return MailmanState(domains, lists)

    # --- applying ----------------------------------------------------------------------------

    def _apply(self, todo: Plan, ledger: Ledger, summary: Summary) -> None:
        """Domains and lists first; then, from what Mailman now has, the people, settings and
        aliases (a new list's settings are Mailman's defaults, read back rather than assumed)."""
        ledger = dict(ledger)
        unconfirmed = _subscriptions(todo)
        failed_domains: set[str] = set()
        try:
            structural = [a for a in todo.actions if isinstance(a, CreateDomain | CreateList)]
            for action in structural:
                if isinstance(action, CreateDomain):
                    if not self._do(action, summary):
                        failed_domains.add(action.mail_host)  # its lists cannot be made
                elif action.name.rpartition("@")[2] not in failed_domains and self._do(
                    action, summary
                ):
                    ledger.pop(action.list_id, None)  # a new list: whatever was, seed it afresh
            if structural:
                have = self.read()
                todo = plan(self.config.domains, self.config.lists, have, ledger)
                unconfirmed = _subscriptions(todo)
            else:
                have = None
            for change in todo.actions:
                if not isinstance(change, Subscribe | Configure | AcceptAliases):
                    continue  # creating it failed above, and was counted there
                if have is not None and change.list_id not in have.lists:
                    continue
                if self._do(change, summary) and isinstance(change, Subscribe):
                    unconfirmed.discard(_key(change))
        finally:
            save_ledger(self.config.state_file, _without(todo.ledger, unconfirmed))

    def _do(self, action: Action, summary: Summary) -> bool:
        """Ask Mailman for one change; True once Mailman has it. Fatal errors escape."""
        try:
            if isinstance(action, CreateDomain):
                self.mailman.create_domain(action.mail_host)
            elif isinstance(action, CreateList):
                self.mailman.create_list(action.name)
            elif isinstance(action, Configure):
                self.mailman.configure(action.list_id, action.values)
            elif isinstance(action, AcceptAliases):
                self.mailman.set_acceptable_aliases(action.list_id, action.aliases)
            else:
                joined = self.mailman.subscribe(
                    action.list_id, action.address, action.role, welcome=action.welcome
                )
                if joined is Joined.PENDING:
                    summary.pending += 1
                    self.log.emit(
                        "lists_pending", list=action.name, address=action.address, role=action.role
                    )
                    return False
                if joined is Joined.ALREADY:
                    return True  # someone else added them meanwhile: nothing changed here
        except MailmanError as exc:
            if exc.fatal:
                raise
            summary.problems += 1
            self.log.emit(
                "lists_failed",
                action=action.describe(),
                method=exc.method,
                url=exc.url,
                status=exc.status,
                reason=exc.reason,
            )
            return False
        summary.count(action)
        self._emit_done(action, dry_run=False)
        return True

    def _emit_done(self, action: Action, dry_run: bool) -> None:
        if isinstance(action, CreateDomain):
            self.log.emit("lists_domain_created", domain=action.mail_host, dry_run=dry_run)
        elif isinstance(action, CreateList):
            self.log.emit("lists_list_created", list=action.name, dry_run=dry_run)
        elif isinstance(action, Subscribe):
            self.log.emit(
                "lists_subscribed",
                list=action.name,
                address=action.address,
                role=action.role,
                dry_run=dry_run,
            )
        elif isinstance(action, AcceptAliases):
            self.log.emit(
                "lists_aliases_added",
                list=action.name,
                added=list(action.added),
                aliases=list(action.aliases),
                dry_run=dry_run,
            )
        else:
            for attribute, now, wanted in action.changes:
                self.log.emit(
                    "lists_configured",
                    list=action.name,
                    attribute=attribute,
                    old=now,
                    new=wanted,
                    dry_run=dry_run,
                )

    def _report_left(self, todo: Plan, summary: Summary) -> None:
        for gone in todo.left:
            summary.left += 1
            self.log.emit("lists_left", list=gone.name, address=gone.address, role=gone.role)


# --- the state file (plan.py's Ledger) -------------------------------------------------------


def load_ledger(path: str) -> Ledger:
    """The ledger saved by the last run; none yet (first run) is an empty one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
        lists = data["lists"]
        return {
            str(list_id): {role: frozenset(str(a) for a in roles.get(role, [])) for role in ROLES}
            for list_id, roles in lists.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateFileError(
            f"{path}: not a state file mailglue wrote ({exc}); move it away to start afresh "
            "(then inventory members who left a list are added to it again)"
        ) from exc


def save_ledger(path: str, ledger: Ledger) -> None:
    """Write atomically, and only when it changed; readable by root only (it holds addresses)."""
    data = {
        "lists": {
            list_id: {role: sorted(roles.get(role, ())) for role in ROLES}
            for list_id, roles in sorted(ledger.items())
        }
    }
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    target = Path(path)
    try:
        if target.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise StateFileError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StateFileError(f"{path}: cannot write: {exc.strerror or exc}") from exc


Key = tuple[str, str, str]


def _key(action: Subscribe) -> Key:
    return (action.list_id, action.role, action.address.lower())


def _subscriptions(todo: Plan) -> set[Key]:
    return {_key(a) for a in todo.actions if isinstance(a, Subscribe)}


def _without(ledger: Ledger, unconfirmed: set[Key]) -> dict[str, Mapping[str, frozenset[str]]]:
    """The planned ledger less the subscriptions Mailman does not have (refused, pending,
    or not tried because the pass stopped): the next run tries those again."""
    return {
        list_id: {
            role: frozenset(a for a in roles.get(role, ()) if (list_id, role, a) not in unconfirmed)
            for role in ROLES
        }
        for list_id, roles in ledger.items()
    }
