"""The LDAP connection settings, one section shape for every mailglue daemon that reads LDAP.

The bind password is a `Secret` (common/secrets.py), read by the one rule every password
follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from milters.common.configkit import ConfigReader
from milters.common.secrets import Secret, read_secret

__all__ = ["AliasConfig", "LdapConfig", "read_filter", "read_ldap"]


@dataclass(frozen=True)
class AliasConfig:
    """Where aliases live in LDAP (Postfix's virtual_alias_maps reads the same entries)."""

    base: str
    filter: str = "(objectClass=nisMailAlias)"
    key_attribute: str = "cn"
    member_attribute: str = "rfc822MailMember"
    max_depth: int = 8


@dataclass(frozen=True)
class LdapConfig:
    uri: str = "ldap://127.0.0.1/"
    base: str = ""
    bind_dn: str | None = None
    bind_password: Secret | None = None
    user_filter: str = "(objectClass=inetOrgPerson)"
    uid_attribute: str = "uid"
    address_attributes: tuple[str, ...] = ("mail",)
    login_attributes: tuple[str, ...] = ("uid",)
    starttls: bool = False
    tls_ca_file: str | None = None
    timeout: float = 5.0


def read_filter(reader: ConfigReader, key: str, default: str) -> str:
    """An LDAP search filter: at least its outer parentheses, so a typo is caught at start."""
    text = reader.text(key, default)
    if not (text.startswith("(") and text.endswith(")")):
        reader.problem(key, f"must be an LDAP filter in parentheses, got {text!r}")
    return text


def read_ldap(reader: ConfigReader) -> LdapConfig:
    """An `ldap:` section: the same keys wherever mailglue talks to LDAP."""
    d = LdapConfig()
    uri = reader.text("uri", d.uri)
    if not uri.startswith(("ldap://", "ldaps://", "ldapi://")):
        reader.problem("uri", f"must start with ldap://, ldaps:// or ldapi://, got {uri!r}")
    base = reader.text("base", d.base)
    if not reader.has("base"):
        reader.problem("base", "is required (the search base, e.g. ou=people,dc=example,dc=org)")
    bind_dn = reader.optional_text("bind_dn")
    password = read_secret(reader, "bind_password", "bind_password_file")
    if password is not None and bind_dn is None:
        reader.problem("bind_dn", "is required when a bind password is given")
    user_filter = read_filter(reader, "user_filter", d.user_filter)
    config = LdapConfig(
        uri=uri,
        base=base,
        bind_dn=bind_dn,
        bind_password=password,
        user_filter=user_filter,
        uid_attribute=reader.text("uid_attribute", d.uid_attribute),
        address_attributes=reader.text_list("address_attributes", d.address_attributes),
        login_attributes=reader.text_list("login_attributes", d.login_attributes),
        starttls=reader.boolean("starttls", d.starttls),
        tls_ca_file=reader.optional_text("tls_ca_file"),
        timeout=reader.seconds("timeout", d.timeout, minimum=0.1, maximum=60),
    )
    for key in ("address_attributes", "login_attributes"):
        if not getattr(config, key):
            reader.problem(key, "needs at least one attribute")
    if config.starttls and uri.startswith("ldaps://"):
        reader.problem("starttls", "cannot be combined with an ldaps:// uri (already TLS)")
    reader.finish()
    return config
