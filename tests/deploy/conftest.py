"""The deployment tests apply the Ansible playbook to this machine (root, Debian) once for the
whole package; test_deploy checks the deployment, test_journeys walks the users' journeys."""

from __future__ import annotations

import contextlib
import imaplib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.browser import browser  # noqa: F401  (the fixture, for every journey)
from tests.deploy.mailuser import RemoteMx, outside_mx, relay_address, token
from tests.deploy.stack import (
    ROOT,
    checked_stack,
    deploy_and_check,
    ensure_ansible,
    inventory_vars,
    ldap_as_root,
    member_dn,
    smoke,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deploy: applies the Ansible playbook to this machine and checks the real ports",
    )


@pytest.fixture(scope="package")
def deployed() -> Iterator[dict[str, Any]]:
    if os.environ.get("MAILGLUE_DEPLOY_REUSE") == "1":
        # Iterating on the checks below: skip the playbook runs, use what is deployed.
        ensure_ansible()
        yield checked_stack(inventory_vars())
        return
    try:
        yield deploy_and_check()
    finally:
        # Leave the machine as we found it: the deployed daemons (rsyslogd on /dev/log among
        # them) must not run on under the rest of the suite. `make up` starts them again.
        subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], check=False, timeout=120)


@pytest.fixture(scope="package")
def remote_mx(deployed: dict[str, Any]) -> Iterator[RemoteMx]:
    with outside_mx(*relay_address(deployed["vars"])) as remote:
        yield remote


@pytest.fixture
def admin(deployed: dict[str, Any]) -> Iterator[imaplib.IMAP4_SSL]:
    variables = deployed["vars"]
    with smoke.imap_login(
        variables.get("mail_admin_user", "cyrus"), variables["mail_admin_password"]
    ) as imap:
        yield imap


@contextlib.contextmanager
def member_in_ldap(
    deployed: dict[str, Any], admin: imaplib.IMAP4_SSL, *, logs_in: bool
) -> Iterator[dict[str, str]]:
    """A member added to LDAP for one test, with a name nobody has written to before; once
    `logs_in`, Cyrus has made the mailbox. Entry and mailbox are removed afterwards."""
    tag = token()
    uid = f"newcomer-{tag}"
    who = {
        "uid": uid,
        "mail": f"{uid}@example.org",
        "password": f"pw-{token()}",
        "name": f"Nora Newcomer{tag}",
    }
    ldif = (
        f"dn: {member_dn(uid)}\nobjectClass: inetOrgPerson\n"
        f"objectClass: mailglueMailbox\nuid: {uid}\ncn: {who['name']}\n"
        f"givenName: Nora\nsn: Newcomer{tag}\n"
        f"mail: {who['mail']}\nuserPassword: {who['password']}\n"
    )
    added = ldap_as_root("ldapadd", ldif)
    assert added.returncode == 0, added.stderr
    try:
        if logs_in:
            with smoke.imap_login(uid, who["password"]):
                pass  # Cyrus creates the mailbox
        yield who
    finally:
        ldap_as_root("ldapdelete", "", member_dn(uid))
        if logs_in:
            # An admin may delete a mailbox once it gives itself the right to (x); Cyrus
            # reads rights as letters, so "all" would be l and a.
            mailbox = f"user.{uid}"
            admin_user = deployed["vars"].get("mail_admin_user", "cyrus")
            admin.setacl(mailbox, admin_user, "lrswipkxtecda")
            deleted = admin.delete(mailbox)
            assert deleted[0] == "OK", f"{mailbox} left behind: {deleted}"


@pytest.fixture
def newcomer(deployed: dict[str, Any], admin: imaplib.IMAP4_SSL) -> Iterator[dict[str, str]]:
    """A new member who has logged in once. Cyrus warns about a quota root at most every 10
    minutes per imapd process, so the warning test needs a quota root no earlier test opened."""
    with member_in_ldap(deployed, admin, logs_in=True) as who:
        yield who


@pytest.fixture
def never_logged_in(deployed: dict[str, Any], admin: imaplib.IMAP4_SSL) -> Iterator[dict[str, str]]:
    """A new member who has not logged in yet, so has no mailbox (whoever logs in as one of
    the inventory's users, a person checking the stack too, makes theirs)."""
    with member_in_ldap(deployed, admin, logs_in=False) as who:
        yield who
