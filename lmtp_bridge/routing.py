"""Recipient → LMTP backend, and the recipients of one message grouped by backend.

Order of precedence: the per-recipient override (e.g. LDAP `mailHost`, looked up by the
caller), then the per-domain map, then the default backend. When none applies, or the override
itself fails or returns something unusable, the answer is a `NoRoute`: the caller tempfails,
because delivering to a guessed backend could put mail in the wrong store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lmtp_bridge.address import BackendAddress, BackendAddressError, parse_backend_address
from lmtp_bridge.domains import normal_domain
from lmtp_bridge.outcome import NotAttempted, NotAttemptedReason

__all__ = ["LMTP_PORT", "NoRoute", "Override", "RoutePlan", "Router", "mail_host_backend"]

LMTP_PORT = 24  # IANA's LMTP port, for a mailHost that names only a host

# Returns the recipient's backend, or None when this recipient has no override.
Override = Callable[[str], BackendAddress | str | None] | Mapping[str, BackendAddress | str]


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No backend could be chosen for this recipient; `reason` says why, for the log."""

    recipient: str
    reason: str

    def outcome(self) -> NotAttempted:
        """The fold rule's input for this recipient."""
        return NotAttempted(NotAttemptedReason.NO_ROUTE, self.reason)


@dataclass(frozen=True)
class RoutePlan:
    """Recipients grouped by backend (each group in message order) and those with no route."""

    groups: Mapping[BackendAddress, tuple[str, ...]] = field(default_factory=dict)
    unrouted: Mapping[str, NoRoute] = field(default_factory=dict)


def mail_host_backend(value: str) -> BackendAddress:
    """A directory's per-user mailstore (e.g. LDAP `mailHost`) as an LMTP backend.

    `inet:…`, `unix:…` and `lmtp:…` are taken as they are; a bare `host` or `host:port` is
    that host's LMTP service (port 24 unless given), as in a Cyrus Murder-less split setup.
    Raises BackendAddressError for anything else, which the router turns into "no route".
    """
    text = value.strip()
    if text.startswith(("inet:", "unix:", "lmtp:")):
        return parse_backend_address(text)
    if text.startswith("[") or text.count(":") == 1:
        return parse_backend_address(f"inet:{text}")
    return parse_backend_address(f"inet:{text}:{LMTP_PORT}")


def _as_address(value: BackendAddress | str) -> BackendAddress:
    return parse_backend_address(value) if isinstance(value, str) else value


class Router:
    """Chooses a backend per recipient; holds no I/O of its own (the override may)."""

    def __init__(
        self,
        default: BackendAddress | str | None,
        domains: Mapping[str, BackendAddress | str] | None = None,
        override: Override | None = None,
    ) -> None:
        self.default = _as_address(default) if default is not None else None
        self.domains = {normal_domain(d): _as_address(a) for d, a in (domains or {}).items()}
        self.override = override

    def route(self, recipient: str) -> BackendAddress | NoRoute:
        """The backend for one recipient, or why there is none."""
        if self.override is not None:
            try:
                if callable(self.override):
                    chosen = self.override(recipient)
                else:
                    chosen = self.override.get(recipient)
            except Exception as exc:  # the lookup (LDAP…) failed: do not fall back, do not guess
                return NoRoute(recipient, f"backend lookup failed: {type(exc).__name__}: {exc}")
            if chosen is not None:
                try:
                    return _as_address(chosen)
                except BackendAddressError as exc:
                    return NoRoute(recipient, f"per-recipient backend is unusable: {exc}")
        _, at, domain = recipient.rpartition("@")
        if at:
            found = self.domains.get(normal_domain(domain))
            if found is not None:
                return found
        if self.default is not None:
            return self.default
        where = f"domain {domain!r}" if at else "a recipient without a domain"
        return NoRoute(recipient, f"no backend configured for {where} and no default backend")

    def plan(self, recipients: Sequence[str]) -> RoutePlan:
        """Route every recipient (duplicates once) and group them by backend."""
        groups: dict[BackendAddress, list[str]] = {}
        unrouted: dict[str, NoRoute] = {}
        for rcpt in dict.fromkeys(recipients):
            where = self.route(rcpt)
            if isinstance(where, NoRoute):
                unrouted[rcpt] = where
            else:
                groups.setdefault(where, []).append(rcpt)
        return RoutePlan({a: tuple(rs) for a, rs in groups.items()}, unrouted)
