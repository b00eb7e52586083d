"""`make down` stops every daemon the playbook runs.

Under supervisor, stopping supervisord stops them all; under systemd, scripts/down.sh stops
the units in its list one by one, so a daemon a role runs but the list lacks keeps running
(Mailman and the learn/quota services did).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parents[2]


def programs_the_roles_run() -> set[str]:
    """Every `mail_program.name` a role hands to the mail role's program.yml."""
    names = set()
    for tasks in (REPO / "ansible/roles").glob("*/tasks/*.yml"):
        text = tasks.read_text()
        for call in re.finditer(r"(?:tasks_from: program|include_tasks: program\.yml)\n", text):
            following = text[call.end() : call.end() + 400]
            found = re.search(r"mail_program:\n\s+name: ([\w.-]+)", following)
            assert found, f"{tasks}: no mail_program.name after {call.group(0).strip()}"
            names.add(found.group(1))
    return names


def programs_down_stops() -> set[str]:
    script = (REPO / "scripts/down.sh").read_text()
    found = re.search(r"^programs=\(([^)]*)\)", script, re.MULTILINE)
    assert found, "scripts/down.sh has no programs=(...) list"
    return set(found.group(1).split())


def test_down_stops_every_daemon_the_playbook_runs() -> None:
    running = programs_the_roles_run()
    assert {"postfix", "mailman3", "mailglue-learn"} <= running  # the parser finds them
    assert running - programs_down_stops() == set()
