"""`quota.yaml`: where the members and their quota attribute are, and how to reach Cyrus.

Its own file, like learn.yaml: it holds the Cyrus admin password, which the milter and the
policy service must not be able to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from milters.common.configkit import ConfigReader, load_yaml, log_file
from milters.common.imap import ImapConfig, read_imap
from milters.common.ldapconfig import LdapConfig, read_ldap


@dataclass(frozen=True)
class QuotaConfig:
    imap: ImapConfig = field(default_factory=ImapConfig)
    ldap: LdapConfig = field(default_factory=LdapConfig)
    default_kib: int = 0  # members without the attribute; 0 = no limit
    attribute: str = "mailQuotaKiB"
    log_file: str | None = None
    source: str = "<defaults>"


def parse_quota_config(source: str, data: object) -> QuotaConfig:
    top = ConfigReader(source, data)
    d = QuotaConfig()
    imap = read_imap(top.section("imap"))
    ldap = read_ldap(top.section("ldap"))
    quota = top.section("quota")
    default_kib = quota.integer("default_kib", d.default_kib, minimum=0)
    attribute = quota.text("attribute", d.attribute)
    quota.finish()
    log_path = log_file(top)
    top.finish_document()
    return QuotaConfig(
        imap=imap,
        ldap=ldap,
        default_kib=default_kib,
        attribute=attribute,
        log_file=log_path,
        source=source,
    )


def load_quota_config(path: str | Path) -> QuotaConfig:
    source, data = load_yaml(path)
    return parse_quota_config(source, data)
