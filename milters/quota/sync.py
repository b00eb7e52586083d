"""One pass of `mailglue quota`: read every member's quota from LDAP, set what differs in
Cyrus with SETQUOTA as the Cyrus admin. LDAP and IMAP are the only I/O; the rule is in plan.py.
"""

from __future__ import annotations

import imaplib
from dataclasses import dataclass
from typing import Any

import ldap

from milters.common.imap import connect, imap_ok, imap_quoted
from milters.common.jsonlog import EventLog
from milters.common.ldapconn import open_connection
from milters.quota.config import QuotaConfig
from milters.quota.plan import (
    Change,
    QuotaValueError,
    changes,
    mailbox_of,
    storage_limit,
    wanted_kib,
)


@dataclass(frozen=True)
class Summary:
    members: int
    changed: int
    problems: int

    def line(self) -> str:
        return f"quota: {self.members} members, {self.changed} changed, {self.problems} problems"


class QuotaSync:
    def __init__(self, config: QuotaConfig, log: EventLog) -> None:
        self.config = config
        self.log = log
        self.problems = 0

    def run(self, dry_run: bool = False) -> Summary:
        wanted = self._wanted()
        imap = connect(self.config.imap)
        try:
            have: dict[str, int | None] = {}
            for uid in wanted:
                exists, limit = self._have(imap, uid)
                if exists:
                    have[uid] = limit
            todo = changes(wanted, have)
            for change in todo:
                if not dry_run:
                    self._set(imap, change)
                self.log.emit(
                    "quota_set",
                    user=change.uid,
                    mailbox=change.mailbox,
                    from_kib=change.have_kib,
                    to_kib=change.want_kib,
                    dry_run=dry_run,
                )
        finally:
            imap.logout()
        summary = Summary(len(wanted), len(todo), self.problems)
        self.log.emit(
            "quota_summary",
            members=summary.members,
            changed=summary.changed,
            problems=summary.problems,
        )
        return summary

    def _wanted(self) -> dict[str, int | None]:
        c = self.config
        uid_attr = c.ldap.uid_attribute
        conn = open_connection(c.ldap)
        try:
            entries: list[tuple[str | None, dict[str, list[bytes]]]] = conn.search_s(
                c.ldap.base, ldap.SCOPE_SUBTREE, c.ldap.user_filter, [uid_attr, c.attribute]
            )
        finally:
            conn.unbind_s()
        wanted: dict[str, int | None] = {}
        for dn, attrs in entries:
            if dn is None:  # a search continuation reference, not an entry
                continue
            uids = [v.decode("utf-8", "replace") for v in attrs.get(uid_attr, [])]
            if not uids:
                continue
            try:
                wanted[uids[0]] = wanted_kib(
                    uids[0],
                    [v.decode("ascii", "replace") for v in attrs.get(c.attribute, [])],
                    c.default_kib,
                )
            except QuotaValueError as exc:
                self.problems += 1
                self.log.emit("quota_problem", user=uids[0], dn=dn, reason=str(exc))
        return wanted

    def _have(self, imap: imaplib.IMAP4, uid: str) -> tuple[bool, int | None]:
        """Whether the mailbox exists, and its own STORAGE limit. A mailbox not created yet
        (no first login) gets the default from Cyrus then, and its value at the next pass."""
        mailbox = mailbox_of(uid)
        typ, data = imap.getquotaroot(imap_quoted(mailbox))
        if typ != "OK":
            return False, None
        quota_lines: list[Any] = data[1] if len(data) > 1 else []
        return True, storage_limit(mailbox, quota_lines)

    def _set(self, imap: imaplib.IMAP4, change: Change) -> None:
        limits = "()" if change.want_kib is None else f"(STORAGE {change.want_kib})"
        imap_ok(imap.setquota(imap_quoted(change.mailbox), limits), f"SETQUOTA {change.mailbox}")
