"""Opening a bound LDAP connection from an `ldap:` section, for every mailglue part that
reads LDAP (policy lookups, the milter's routing, the quota job)."""

from __future__ import annotations

from typing import Any

import ldap

from milters.common.ldapconfig import LdapConfig

__all__ = ["DirectoryUnavailable", "describe", "open_connection"]


class DirectoryUnavailable(Exception):
    """LDAP could not give a trustworthy answer (down, slow, refused the bind, ambiguous data)."""


def open_connection(c: LdapConfig) -> Any:
    """A bound connection with the section's timeouts and TLS settings."""
    try:
        conn = ldap.initialize(c.uri)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, c.timeout)
        conn.set_option(ldap.OPT_TIMEOUT, c.timeout)
        if c.tls_ca_file:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, c.tls_ca_file)
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        if c.starttls:
            conn.start_tls_s()
        if c.bind_dn is not None:
            password = c.bind_password.reveal() if c.bind_password is not None else ""
            conn.simple_bind_s(c.bind_dn, password)
    except ldap.LDAPError as exc:
        raise DirectoryUnavailable(f"{c.uri}: {describe(exc)}") from exc
    return conn


def describe(exc: BaseException) -> str:
    """python-ldap puts a dict in args[0]; keep its human parts."""
    info = exc.args[0] if exc.args else None
    if isinstance(info, dict):
        parts = [str(info.get(k)) for k in ("desc", "info") if info.get(k)]
        return f"{type(exc).__name__}: {'; '.join(parts)}"
    return f"{type(exc).__name__}: {exc}"
