"""Every handler that reloads a daemon by signal can be carried out under systemd.

A handler with `mail_restart.signal` becomes `systemctl reload` under systemd, which needs an
`ExecReload=` in the unit. Our own units (tasks `program` of the mail role) get one only from
`reload_signal`; the multi-host bed found mailman3-web without it ("Job type reload is not
applicable"). Daemons that run under Debian's own units with systemd (nginx, php-fpm: their
`program` tasks are for supervisor only) bring their own ExecReload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROLES = Path(__file__).parents[2] / "ansible/roles"


def tasks(node: Any) -> Iterator[dict[str, Any]]:
    """Every task mapping in a tasks or handlers file, blocks included."""
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            yield from tasks(node.get(key))


def load(path: Path) -> list[Any]:
    return yaml.safe_load(path.read_text()) or []


def our_units() -> dict[str, dict[str, Any]]:
    """The `program` definitions that become our systemd units (not supervisor-only ones)."""
    units: dict[str, dict[str, Any]] = {}
    for path in ROLES.glob("*/tasks/*.yml"):
        for task in tasks(load(path)):
            program = (task.get("vars") or {}).get("mail_program")
            if not isinstance(program, dict):
                continue
            when = task.get("when", "")
            conditions = when if isinstance(when, list) else [when]
            if any("== 'supervisor'" in str(c) for c in conditions):
                continue
            units[program["name"]] = program
    return units


def signal_reloads() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in ROLES.glob("*/handlers/*.yml"):
        for task in tasks(load(path)):
            restart = (task.get("vars") or {}).get("mail_restart")
            if isinstance(restart, dict) and "signal" in restart:
                found.append((f"{path.parent.parent.name}: {task['name']}", restart))
    return found


def test_there_are_signal_reloads_to_check() -> None:
    assert len(signal_reloads()) >= 4


def test_every_signal_reload_of_our_unit_has_an_exec_reload() -> None:
    units = our_units()
    missing = [
        handler
        for handler, restart in signal_reloads()
        if restart["name"] in units
        and units[restart["name"]].get("reload_signal") != restart["signal"]
    ]
    assert missing == []
