"""The deployed stack as the deployment tests see it: the playbook runs, the inventory's
values, and the standard ports (25, 587, 993) on this machine."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Every deployment test module: `pytestmark = DEPLOY_MARKS`.
DEPLOY_MARKS = [
    pytest.mark.deploy,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(
        os.geteuid() != 0 or not Path("/etc/debian_version").exists(),
        reason="deploys system daemons: needs root on Debian",
    ),
    pytest.mark.skipif(
        os.environ.get("MAILGLUE_SKIP_DEPLOY") == "1", reason="MAILGLUE_SKIP_DEPLOY=1"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
VENV = ROOT / ".venv-ansible"
PINS = ["ansible-core==2.19.14", "ansible-lint==26.10.1", "yamllint==1.38.0"]
INVENTORY = "inventories/single"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def load_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mailglue_smoke", ROOT / "scripts/smoke.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = load_smoke()


def ensure_ansible() -> Path:
    playbook = VENV / "bin/ansible-playbook"
    if not playbook.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", *PINS],
            check=True,
        )
    return playbook


def run_playbook(*extra: str, inventory: str = INVENTORY) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        [str(ensure_ansible()), "-i", inventory, "site.yml", *extra],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    sys.stdout.write(proc.stdout[-4000:])
    return proc


def recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no PLAY RECAP in output:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def changed_tasks(output: str) -> list[str]:
    """Names of the tasks that reported a change (for a readable failure)."""
    names, current = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            names.append(f"{current}: {line}")
    return names


def inventory_vars() -> dict[str, Any]:
    proc = subprocess.run(
        [str(VENV / "bin/ansible-inventory"), "-i", INVENTORY, "--host", "localhost"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def secrets(variables: dict[str, Any]) -> list[str]:
    found = [
        str(variables[k])
        for k in ("ldap_root_password", "mail_ldap_service_password", "mail_admin_password")
        if variables.get(k)
    ]
    found += [u["password"] for u in variables.get("ldap_users", [])]
    return found


def deploy_and_check() -> dict[str, Any]:
    first = run_playbook()
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]

    second = run_playbook()
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-2000:]
    assert recap(second.stdout)["changed"] == 0, "second run changed:\n" + "\n".join(
        changed_tasks(second.stdout)
    )

    check = run_playbook("--check", "--diff")
    assert check.returncode == 0, check.stdout[-6000:] + check.stderr[-2000:]
    assert recap(check.stdout)["changed"] == 0, "--check --diff would change:\n" + "\n".join(
        changed_tasks(check.stdout)
    )
    variables = inventory_vars()
    output = first.stdout + second.stdout + check.stdout + check.stderr
    leaked = [s for s in secrets(variables) if s in output]
    assert not leaked, f"{len(leaked)} secret(s) printed by the playbook runs"

    return checked_stack(variables)


# The inventory's user who never logs in: mail to him is refused as "never logged in".
NEVER_LOGS_IN = "dave"


def checked_stack(variables: dict[str, Any]) -> dict[str, Any]:
    users = variables["ldap_users"]
    # Cyrus creates a mailbox at the user's first login; log every test user in once.
    for user in users:
        if user["uid"] == NEVER_LOGS_IN:
            continue
        with smoke.imap_login(user["uid"], user["password"]):
            pass
    return {"users": users, "vars": variables}


def user(deployed: dict[str, Any], index: int) -> dict[str, str]:
    u: dict[str, str] = deployed["users"][index]
    return u


def run_service_pass(service: str, timeout: float = 300) -> str:
    """One pass of what the service mailglue-<service> (learn, quota) runs periodically, as
    its own user: what it reported."""
    done = subprocess.run(
        [
            "runuser",
            "-u",
            "mailglue",
            "--",
            "/opt/mailglue/venv/bin/mailglue",
            service,
            "--config",
            f"/etc/mailglue/{service}.yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def member_dn(uid: str) -> str:
    return f"uid={uid},ou=people,dc=example,dc=org"


def ldap_as_root(tool: str, stdin: str = "", *args: str) -> subprocess.CompletedProcess[str]:
    """An ldap-utils tool as root on this host (ldapi, SASL EXTERNAL): how an admin edits LDAP."""
    return subprocess.run(
        [tool, "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
