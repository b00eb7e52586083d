"""Delivery-confirmed acceptance: hand the message to Cyrus over LMTP before answering.

The milter calls `Deliverer.deliver()` at end-of-message, while Postfix holds the SMTP
session open; the per-recipient LMTP replies are folded (lmtp_bridge.fold) into the one reply
the client gets. LMTP connections are pooled per backend and reused across transactions.

With `delivery.ldap`, only recipients that are LDAP users go over LMTP: an alias has no
mailbox of its own, so it stays in Postfix's queue, whose virtual_alias_maps expands it.
With `delivery.lists_map`, a post to a mailing list goes to Mailman's LMTP runner the same
way, so the poster's 250 also means "Mailman has it".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from lmtp_bridge import (
    BackendAddress,
    BackendUnavailable,
    LmtpClient,
    Outcome,
    Router,
    Timeouts,
)
from lmtp_bridge.routing import mail_host_backend
from milters.common.addresses import base_address, domain_of
from milters.common.directory import LdapDirectory
from milters.common.ldapconn import DirectoryUnavailable
from milters.common.listmap import ListMap
from milters.scan.config import DeliveryConfig

MAX_IDLE_PER_BACKEND = 16


@dataclass(frozen=True)
class Delivery:
    outcomes: dict[str, Outcome]
    backends: dict[str, str]  # recipient -> the LMTP backend it was routed to (for the log)
    reconnects: dict[str, str]  # backend -> why its held connection was replaced (for the log)
    lists: frozenset[str]  # the recipients that are mailing lists (for the log)


class Deliverer:
    def __init__(
        self,
        config: DeliveryConfig,
        lhlo_name: str,
        report: Callable[[str], None] | None = None,  # problems with the lists map, for the log
    ) -> None:
        self.config = config
        self.lhlo_name = lhlo_name
        self.directory: LdapDirectory | None = None
        if config.ldap is not None:
            self.directory = LdapDirectory(config.ldap, config.route_attribute)
        self.lists = ListMap(config.lists_map, report) if config.lists_map else None
        override = self._route if self.directory or self.lists else None
        self.router = Router(config.lmtp_backend, config.domain_backends, override)
        self.timeouts = Timeouts(
            connect=config.connect_timeout,
            command=config.command_timeout,
            final=config.final_timeout,
        )
        self._idle: dict[BackendAddress, list[LmtpClient]] = {}
        self._lock = threading.Lock()

    def _route(self, recipient: str) -> BackendAddress | None:
        """Mailman's LMTP for a list address; else the recipient's own mailstore from LDAP;
        None (domain/default backend) when the entry has no such attribute or no entry exists
        (Cyrus then refuses the recipient). An LDAP outage raises, and the router makes that
        "no route": a tempfail, not a guess.
        """
        if self.lists is not None:
            backend = self.lists.backend(self._base(recipient))
            if backend is not None:
                return backend
        if self.directory is None:
            return None
        user = self.directory.find_by_address(self._base(recipient))
        if user is None or user.route is None:
            return None
        return mail_host_backend(user.route)

    def _base(self, recipient: str) -> str:
        return base_address(recipient, self.config.recipient_delimiter)

    def is_list(self, recipient: str) -> bool:
        return self.lists is not None and self.lists.backend(self._base(recipient)) is not None

    def is_local(self, recipient: str) -> bool:
        """Ours to deliver now: the recipient's domain is one of `delivery.local_domains` and,
        when LDAP is configured, it is a user or a mailing list (an alias is left to Postfix's
        queue)."""
        if domain_of(recipient) not in self.config.local_domains:
            return False
        if self.is_list(recipient):
            return True
        if self.directory is None:
            return True
        try:
            return self.directory.find_by_address(self._base(recipient)) is not None
        except DirectoryUnavailable:
            return True  # the routing lookup fails the same way: a tempfail, never a guess

    def _acquire(self, backend: BackendAddress) -> LmtpClient:
        with self._lock:
            idle = self._idle.get(backend)
            if idle:
                return idle.pop()
        return LmtpClient(backend, lhlo_name=self.lhlo_name, timeouts=self.timeouts)

    def _release(self, backend: BackendAddress, client: LmtpClient) -> None:
        with self._lock:
            idle = self._idle.setdefault(backend, [])
            if client.connected and len(idle) < MAX_IDLE_PER_BACKEND:
                idle.append(client)
                return
        client.close()

    def deliver(
        self,
        sender: str,
        recipients: Sequence[str],
        message: BinaryIO,
        deadline: float,
        *,
        size: int | None = None,
        eight_bit: bool | None = None,
    ) -> Delivery:
        """Each recipient's LMTP outcome (its reply, or why it was not attempted) and backend.

        `size` and `eight_bit`, when the caller knows them, spare a pass over the message.
        """
        plan = self.router.plan(recipients)
        outcomes: dict[str, Outcome] = {r: why.outcome() for r, why in plan.unrouted.items()}
        backends = {r: str(b) for b, group in plan.groups.items() for r in group}
        reconnects: dict[str, str] = {}
        for backend, group in plan.groups.items():
            client = self._acquire(backend)
            try:
                message.seek(0)
                result = client.deliver(
                    sender, group, message, size, eight_bit=eight_bit, deadline=deadline
                )
                outcomes.update(result.replies)
                if result.replaced is not None:
                    reconnects[result.backend] = result.replaced
            except BackendUnavailable as exc:
                outcomes.update(exc.outcomes(group))
            finally:
                self._release(backend, client)
        lists = frozenset(r for r in recipients if self.is_list(r))
        return Delivery(outcomes, backends, reconnects, lists)

    def close(self) -> None:
        with self._lock:
            for clients in self._idle.values():
                for client in clients:
                    client.close()
            self._idle.clear()
        if self.directory is not None:
            self.directory.close()
