"""User lookups in LDAP (python-ldap), blocking; the server calls them from worker threads.

Every value put into a filter goes through `escape_filter_chars`, so `*`, `)(` or a NUL in an
address from the SMTP client match literally and find nobody. Connections are pooled (one per
busy thread at most), rebuilt after any error, and a dead pooled connection is retried once on
a fresh one, so an LDAP restart costs no deferrals. Failures surface as DirectoryUnavailable.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ldap
import ldap.filter

from milters.common.ldapconfig import AliasConfig, LdapConfig
from milters.common.ldapconn import DirectoryUnavailable, describe, open_connection

__all__ = ["DirectoryUnavailable", "LdapDirectory", "User", "user_filter"]


Entries = list[tuple[str, dict[str, list[bytes]]]]


@dataclass(frozen=True)
class User:
    """A directory entry: login name and every address it owns (lower case)."""

    uid: str
    addresses: tuple[str, ...]
    route: str | None = None  # the route attribute's value (e.g. mailHost), when asked for


def user_filter(base_filter: str, attributes: Iterable[str], value: str) -> str:
    """`(&BASE(|(a1=v)(a2=v)))` with v escaped: the only place a filter is built."""
    escaped = ldap.filter.escape_filter_chars(value)
    alternatives = "".join(f"({attr}={escaped})" for attr in attributes)
    return f"(&{base_filter}(|{alternatives}))"


def _text(values: Iterable[bytes]) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values]


class LdapDirectory:
    """Finds users by address (recipient check) or by login (sender check), and aliases."""

    def __init__(
        self,
        config: LdapConfig,
        route_attribute: str | None = None,
        aliases: AliasConfig | None = None,
    ) -> None:
        self.config = config
        self.route_attribute = route_attribute  # also fetched, e.g. mailHost for LMTP routing
        self.aliases = aliases
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def find_by_address(self, address: str) -> User | None:
        return self._find(self.config.address_attributes, address)

    def find_by_login(self, login: str) -> User | None:
        return self._find(self.config.login_attributes, login)

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn in idle:
            self._unbind(conn)

    def alias_members(self, address: str) -> tuple[str, ...] | None:
        """The members of the alias `address`, or None when it is no alias (or aliases are
        not configured)."""
        a = self.aliases
        if a is None:
            return None
        search = user_filter(a.filter, (a.key_attribute,), address)
        entries = self._query(a.base, search, [a.member_attribute], address)
        if not entries:
            return None
        members: list[str] = []
        for _, attrs in entries:
            members += (m.strip() for m in _text(attrs.get(a.member_attribute, [])))
        return tuple(members)

    def _find(self, attributes: tuple[str, ...], value: str) -> User | None:
        search = user_filter(self.config.user_filter, attributes, value)
        attrs = [self.config.uid_attribute, *self.config.address_attributes]
        if self.route_attribute:
            attrs.append(self.route_attribute)
        return self._user(self._query(self.config.base, search, attrs, value), value)

    def _query(self, base: str, search: str, attrs: list[str], value: str) -> Entries:
        for attempt in (1, 2):
            conn = self._acquire()
            try:
                result = conn.search_ext_s(
                    base,
                    ldap.SCOPE_SUBTREE,
                    search,
                    attrlist=attrs,
                    timeout=self.config.timeout,
                    sizelimit=2,
                )
            except ldap.SIZELIMIT_EXCEEDED as exc:
                self._release(conn)
                raise DirectoryUnavailable(f"{value!r} belongs to several entries") from exc
            except ldap.SERVER_DOWN as exc:
                self._unbind(conn)
                if attempt == 2:
                    raise DirectoryUnavailable(f"{self.config.uri}: {describe(exc)}") from exc
                continue  # a pooled connection the server had dropped: once more, fresh
            except ldap.LDAPError as exc:
                self._unbind(conn)
                raise DirectoryUnavailable(f"{self.config.uri}: {describe(exc)}") from exc
            self._release(conn)
            return [(dn, found) for dn, found in result if dn is not None]  # skip referrals
        raise AssertionError("unreachable")

    def _user(self, entries: Entries, value: str) -> User | None:
        if not entries:
            return None
        if len(entries) > 1:
            dns = ", ".join(dn for dn, _ in entries)
            raise DirectoryUnavailable(f"{value!r} belongs to several entries: {dns}")
        dn, attrs = entries[0]
        uids = _text(attrs.get(self.config.uid_attribute, []))
        if not uids:
            raise DirectoryUnavailable(f"{dn} has no {self.config.uid_attribute} attribute")
        addresses: list[str] = []
        for attr in self.config.address_attributes:
            addresses += (a.strip().lower() for a in _text(attrs.get(attr, [])))
        routes = _text(attrs.get(self.route_attribute, [])) if self.route_attribute else []
        return User(
            uid=uids[0],
            addresses=tuple(dict.fromkeys(addresses)),
            route=routes[0] if routes else None,
        )

    def _acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: Any) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        self._unbind(conn)

    def _connect(self) -> Any:
        return open_connection(self.config)

    @staticmethod
    def _unbind(conn: Any) -> None:
        with contextlib.suppress(ldap.LDAPError):
            conn.unbind_s()
