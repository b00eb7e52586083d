"""The fault suite's own stack: it kills daemons, so it never shares them with other suites.

Module-scoped: everything is started for tests/fault/test_no_loss.py and torn down when that
module ends, before the integration tests start their own session stack (and their /dev/log
catcher). The layout is the design's: Postfix → policy service (RCPT, LDAP + Cyrus) → scan
milter (spamd + clamd, then LMTP delivery to Cyrus before the 250). A mailing list is wired as
the deployment wires it: a post for LIST_ADDRESS goes from the milter to Mailman's LMTP before
the 250, and Mailman sends the members' copies to Postfix's re-injection smtpd (no scan milter),
which hands them to Cyrus.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.clamd import Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.mailman import Mailman
from tests.harness.milter import ScanMilter
from tests.harness.policy import PolicyService
from tests.harness.postfix import Postfix, reinject_service
from tests.harness.process import LOOPBACK, free_port
from tests.harness.slapd import USERS, Slapd
from tests.harness.spamd import Spamd

from .reconcile import TALLIES, Tally

MAILBOX_USERS = [u.uid for u in USERS]  # alice, bob, carol: in LDAP and with a mailbox
LIST_ADDRESS = "staff@example.org"  # every mailbox user is a member; anyone may post


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reconciliation table, shown by `make test` whether the fault runs passed or not."""
    if not TALLIES:
        return
    terminalreporter.section("no-loss fault suite: reconciliation")
    terminalreporter.write_line(Tally.HEADER)
    for row in TALLIES:
        terminalreporter.write_line(row.row())
    terminalreporter.write_line(
        "left of |: first attempts, mailboxes as the fault left them; right of |: after the "
        "senders retried every 4xx once the fault was over"
    )


@dataclass
class FaultStack:
    root: Path
    spamd: Spamd
    clamd: Clamd
    cyrus: Cyrus
    slapd: Slapd
    policy: PolicyService
    milter: ScanMilter
    postfix: Postfix
    mailman: Mailman

    @property
    def logs(self) -> dict[str, Path]:
        """Where to look when a fault run fails."""
        return {
            "postfix": self.postfix.maillog,
            "milter": self.milter.log_path,
            "milter-events": self.milter.events_path,
            "policy": self.policy.log_path,
            "spamd": self.spamd.log_path,
            "clamd": self.clamd.log_path,
            "cyrmaster": self.cyrus.log_path,
            "slapd": self.slapd.log_path,
            "mailman": self.mailman.mailman_log,
            "mailman-smtp": self.mailman.smtp_log,
        }


def milter_config(spamd: Spamd, clamd: Clamd, cyrus: Cyrus, mailman: Mailman) -> dict[str, object]:
    """Delivery-confirmed acceptance, tempfail on every backend failure (the defaults)."""
    return {
        "milter": {"hostname": "mx.example.org", "time_budget": 60, "keepalive_interval": 5},
        "spam": {"backends": [f"inet:{spamd.host}:{spamd.port}"], "timeout": 30},
        "virus": {"backends": [f"unix:{clamd.socket_path}"], "timeout": 30},
        "delivery": {
            "mode": "lmtp",
            "local_domains": ["example.org"],
            "lmtp_backend": f"unix:{cyrus.lmtp_socket}",
            "lists_map": str(mailman.transport_map),
        },
    }


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[FaultStack]:
    root = Path(tempfile.mkdtemp(prefix="mailglue-fault-"))
    root.chmod(0o755)  # daemons run as their own users and must traverse it
    stops: list[Callable[[], None]] = []
    try:
        spamd = Spamd(root / "spamd")
        clamd = Clamd(root / "clamd")
        cyrus = Cyrus(root / "cyrus")
        slapd = Slapd(root / "slapd")
        milter_port, reinject_port = free_port(), free_port()
        mailman = Mailman(root / "mailman", (LOOPBACK, reinject_port))
        policy = PolicyService(root / "policy", slapd.uri, cyrus.lmtp_socket, mailman.transport_map)
        postfix = Postfix(
            root / "postfix",
            cyrus.lmtp_socket,
            (LOOPBACK, free_port()),  # relay.test: unused here
            f"inet:{LOOPBACK}:{milter_port}",
            {"smtpd_recipient_restrictions": f"reject_unauth_destination, {policy.check}"},
            master_extra=reinject_service(reinject_port),
        )
        for daemon in (spamd, clamd, cyrus, slapd, mailman):
            daemon.start()
            stops.append(daemon.stop)
        for user in MAILBOX_USERS:
            cyrus.add_user(user, f"{user}-secret")
            cyrus.create_mailbox(user)
        # Anyone may post (the load's sender is no member): every post goes to the members.
        members = [f"{user}@example.org" for user in MAILBOX_USERS]
        mailman.create_list(LIST_ADDRESS, members, {"default_nonmember_action": "accept"})
        policy.start()
        stops.append(policy.stop)
        milter = ScanMilter(
            root / "milter", milter_port, milter_config(spamd, clamd, cyrus, mailman)
        )
        milter.ensure()
        stops.append(milter.stop)
        postfix.start()
        stops.append(postfix.stop)
        yield FaultStack(root, spamd, clamd, cyrus, slapd, policy, milter, postfix, mailman)
    finally:
        for stop in reversed(stops):
            stop()
        if not os.environ.get("MAILGLUE_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)
