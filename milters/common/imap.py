"""The Cyrus admin's IMAP session, for the jobs that log in as the admin (learn, quota):
its `imap:` config section, the login, and the two small helpers every command needs."""

from __future__ import annotations

import imaplib
import ssl
from dataclasses import dataclass, field
from typing import Any

from milters.common.configkit import ConfigReader
from milters.common.secrets import Secret, read_secret

SECURITY = ("tls", "starttls", "none")


@dataclass(frozen=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 993
    security: str = "tls"  # tls: IMAPS (implicit TLS); starttls; none (loopback only)
    ca_file: str | None = None
    user: str = "cyrusadmin"
    password: Secret = field(default_factory=lambda: Secret(""))
    folder: str = "LearnSpam"
    timeout: float = 30.0


def read_imap(reader: ConfigReader) -> ImapConfig:
    """An `imap:` section: how an admin job logs in to Cyrus (learn, quota)."""
    d = ImapConfig()
    security = reader.choice("security", d.security, SECURITY)
    default_port = 993 if security == "tls" else 143
    password = read_secret(reader, "password", "password_file")
    if password is None:
        reader.problem("password_file", "the admin's password is needed (or imap.password)")
    config = ImapConfig(
        host=reader.text("host", d.host),
        port=reader.integer("port", default_port, minimum=1, maximum=65535),
        security=security,
        ca_file=reader.optional_text("ca_file"),
        user=reader.text("user", d.user),
        password=password or Secret(""),
        folder=reader.text("folder", d.folder),
        timeout=reader.seconds("timeout", d.timeout),
    )
    reader.finish()
    return config


def connect(config: ImapConfig) -> imaplib.IMAP4:
    if config.security == "tls":
        context = ssl.create_default_context(cafile=config.ca_file)
        imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            config.host, config.port, ssl_context=context, timeout=config.timeout
        )
    else:
        imap = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
        if config.security == "starttls":
            imap.starttls(ssl.create_default_context(cafile=config.ca_file))
    imap.login(config.user, config.password.reveal())
    return imap


def imap_ok(result: tuple[str, list[Any]], what: str) -> list[Any]:
    typ, data = result
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what}: {typ} {data!r}")
    return data


def imap_quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
