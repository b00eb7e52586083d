"""`lists.yaml`: how to reach Mailman's REST API, and the lists the inventory wants.

Its own file, like quota.yaml: it holds Mailman's REST admin password, which neither the
milter nor the policy service may read. Every address and list name is checked here, so a
typo is a config error naming its key, not a Mailman 400 halfway through a run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from milters.common.configkit import ConfigReader, load_yaml, log_file
from milters.common.mailman import MailmanApi, read_mailman
from milters.lists.plan import ARCHIVE_POLICIES, NONMEMBER_ACTIONS, ROLES, DomainSpec, ListSpec

# Mailman's `listname_chars` (Debian's mailman.cfg and Mailman's default): lower case only.
_LIST_LOCAL = re.compile(r"^[-_.0-9a-z]+$")
# The addresses Mailman makes for each list (`staff-request@`, ...): no list may be named so.
_ROBOT_SUFFIXES = (
    "-bounces",
    "-confirm",
    "-join",
    "-leave",
    "-owner",
    "-request",
    "-subscribe",
    "-unsubscribe",
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A mailbox as people write it: no spaces, quotes, brackets or list separators.
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")


@dataclass(frozen=True)
class ListsConfig:
    mailman: MailmanApi = field(default_factory=MailmanApi)
    domains: tuple[DomainSpec, ...] = ()
    lists: tuple[ListSpec, ...] = ()
    # Who the inventory already put on each list (plan.py's Ledger), kept between runs.
    state_file: str = "/var/lib/mailglue/lists-state.json"
    log_file: str | None = None
    source: str = "<defaults>"


def hostname_problem(name: str) -> str | None:
    """Why `name` is no lower-case DNS host name (at least two labels), or None."""
    if name != name.lower():
        return "must be lower case"
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return "is not a host name like example.org"
    return None


def address_problem(address: str) -> str | None:
    """Why `address` is not a plain mail address (local@domain), or None."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "is not a mail address (local@domain)"
    if len(local) > 64 or not _LOCAL_PART.match(local) or ".." in local:
        return "has a local part that is not a plain mailbox name"
    if local.startswith(".") or local.endswith("."):
        return "has a local part that starts or ends with a dot"
    if hostname_problem(domain.lower()) is not None:
        return "has a domain that is not a host name"
    return None


def list_name_problem(name: str) -> str | None:
    local, at, domain = name.rpartition("@")
    if not at or not local:
        return "must be the list's posting address, like staff@example.org"
    if not _LIST_LOCAL.match(local):
        return "may hold only a-z, 0-9 and - _ . before the @ (Mailman's listname_chars)"
    if local.endswith(_ROBOT_SUFFIXES):
        return f"ends like an address Mailman makes for every list ({', '.join(_ROBOT_SUFFIXES)})"
    problem = hostname_problem(domain)
    return None if problem is None else f"has a domain that {problem}"


def _domain(reader: ConfigReader) -> DomainSpec | None:
    mail_host = reader.text("mail_host", "")
    web_host = reader.optional_text("web_host")
    reader.finish()
    if not mail_host:
        reader.problem("mail_host", "is required")
    for key, value in (("mail_host", mail_host), ("web_host", web_host)):
        problem = hostname_problem(value) if value else None
        if problem is not None:
            reader.problem(key, f"{value!r} {problem}")
    return DomainSpec(mail_host, web_host) if mail_host else None


def _addresses(reader: ConfigReader, key: str) -> tuple[str, ...]:
    addresses = reader.text_list(key, ())
    seen: set[str] = set()
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            reader.problem(key, f"{address!r} {problem}")
        elif address.lower() in seen:
            reader.problem(key, f"{address!r} is listed twice")
        seen.add(address.lower())
    return addresses


def _list(reader: ConfigReader) -> ListSpec | None:
    name = reader.text("name", "")
    description = reader.optional_text("description")  # absent: the owners' to set
    if description is not None and "\n" in description:
        reader.problem("description", "must be one line (Mailman refuses newlines)")
    roles = {role: _addresses(reader, f"{role}s") for role in ROLES}
    action = reader.choice("nonmember_action", "hold", NONMEMBER_ACTIONS)
    members_only = reader.boolean("members_only", False)
    max_message_kb = reader.integer("max_message_kb", 0, minimum=0)
    archive_policy = reader.choice("archive_policy", "private", ARCHIVE_POLICIES)
    reader.finish()
    if members_only and action == "accept":
        reader.problem(
            "nonmember_action", "accept contradicts members_only: true (hold, reject or discard)"
        )
    if not name:
        reader.problem("name", "is required")
        return None
    problem = list_name_problem(name)
    if problem is not None:
        reader.problem("name", f"{name!r} {problem}")
        return None
    for role, addresses in roles.items():
        if name in (a.lower() for a in addresses):
            reader.problem(f"{role}s", f"{name!r} is this list itself (Mailman refuses it)")
    if not roles["owner"]:
        reader.problem("owners", "a list needs at least one owner (who can then delegate)")
    return ListSpec(
        name=name,
        owners=roles["owner"],
        moderators=roles["moderator"],
        members=roles["member"],
        description=description,
        nonmember_action=action,
        members_only=members_only,
        max_message_kb=max_message_kb,
        archive_policy=archive_policy,
    )


def parse_lists_config(source: str, data: object) -> ListsConfig:
    top = ConfigReader(source, _without_empty_descriptions(data))
    d = ListsConfig()
    mailman = read_mailman(top.section("mailman"))
    domains = [x for x in (_domain(r) for r in top.sections("domains")) if x is not None]
    readers = top.sections("lists")
    lists = [(r, s) for r, s in ((r, _list(r)) for r in readers) if s is not None]
    state_file = top.text("state_file", d.state_file)
    log_path = log_file(top)
    _no_twins(top, "domains", [d.mail_host for d in domains])
    names: dict[str, str] = {}
    for reader, spec in lists:
        if spec.name in names:
            reader.problem("name", f"{spec.name!r} is also {names[spec.name]}")
        names.setdefault(spec.name, reader.path)
    top.finish_document()
    return ListsConfig(
        mailman=mailman,
        domains=tuple(domains),
        lists=tuple(s for _, s in lists),
        state_file=state_file,
        log_file=log_path,
        source=source,
    )


def _without_empty_descriptions(data: object) -> object:
    """`description: ""` (what a template renders for a list without one) means none given:
    the owners' to set, like a missing key."""
    if not isinstance(data, Mapping) or not isinstance(data.get("lists"), list):
        return data
    lists = [
        {k: v for k, v in item.items() if not (k == "description" and v in ("", None))}
        if isinstance(item, Mapping)
        else item
        for item in data["lists"]
    ]
    return {**data, "lists": lists}


def _no_twins(top: ConfigReader, key: str, values: list[str]) -> None:
    twins = sorted({v for v in values if values.count(v) > 1})
    if twins:
        top.problem(key, f"listed twice: {', '.join(twins)}")


def load_lists_config(path: str | Path) -> ListsConfig:
    source, data = load_yaml(path)
    return parse_lists_config(source, data)
