"""The policy service (`mailglue policy`) as a subprocess, as Postfix's policy client sees it.

Kept apart from tests/integration/test_policy.py's module fixture so suites that need the
service in Postfix's RCPT path (the fault suite) can start their own against their own slapd
and Cyrus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .process import LOOPBACK, ManagedProcess, free_port
from .slapd import BASE_DN, ROOT_DN, ROOT_PASSWORD

MAILGLUE = str(Path(sys.executable).with_name("mailglue"))


class PolicyService:
    """`mailglue policy` on a loopback port, answering for example.org from LDAP and Cyrus."""

    def __init__(
        self,
        root: Path,
        ldap_uri: str,
        lmtp_socket: Path,
        lists_map: Path | None = None,
        route_attribute: str | None = None,
    ) -> None:
        self.root = root
        self.route_attribute = route_attribute  # members' own mailstores, e.g. mailHost
        self.lists_map = lists_map  # Mailman's postfix_lmtp: its list addresses are recipients
        self.port = free_port()
        self.config_path = root / "policy.yaml"
        self.events_path = root / "policy.json"
        self.log_path = root / "policy.stderr.log"
        self.ldap_uri = ldap_uri
        self.lmtp_socket = lmtp_socket
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    @property
    def check(self) -> str:
        """The smtpd_recipient_restrictions entry, as postfix-conf/policy.main.cf has it."""
        return (
            f"check_policy_service {{ inet:{LOOPBACK}:{self.port}, timeout=10s, "
            "default_action=DEFER_IF_PERMIT }"
        )

    def configure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        secret = self.root / "ldap.secret"
        secret.write_text(ROOT_PASSWORD + "\n")
        secret.chmod(0o600)
        lists = f"lists:\n  map: {self.lists_map}\n" if self.lists_map is not None else ""
        route = f"  route_attribute: {self.route_attribute}\n" if self.route_attribute else ""
        self.config_path.write_text(
            f"""\
policy:
  listen: inet:{LOOPBACK}:{self.port}
  local_domains: [example.org]
  decision_timeout: 5
ldap:
  uri: {self.ldap_uri}
  base: {BASE_DN}
  bind_dn: {ROOT_DN}
  bind_password_file: {secret}
  timeout: 2
mailbox:
  lmtp: unix:{self.lmtp_socket}
  probe_recipient: "{{uid}}"
  timeout: 2
{route}rate_limits:
  sasl_user: {{messages: 0, recipients: 0}}
  client_address: {{messages: 0, recipients: 0}}
log:
  file: {self.events_path}
{lists}"""
        )

    def start(self) -> None:
        if not self.config_path.exists():
            self.configure()
        argv = [MAILGLUE, "policy", "--config", str(self.config_path)]
        self.process = ManagedProcess("mailglue-policy", argv, self.log_path)
        self.process.start()
        self.process.wait_ready(self.address, timeout=20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop([self.address], timeout=20)
            self.process = None

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
