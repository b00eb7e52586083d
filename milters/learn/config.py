"""`learn.yaml`: where the LearnSpam folder is, how to log in, which spamd learns.

A file of its own rather than keys in milter.yaml: it holds an IMAP admin password the milter
must not be able to read, and the spamd that learns (`--allow-tell`, Bayes on) may be another
instance than the one the milter scans with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from milters.common.configkit import ConfigReader, load_yaml, log_file
from milters.common.sockets import Address, BackendAddressError, InetAddress, parse_address

SECURITY = ("tls", "starttls", "none")
AFTER = ("delete", "move")


@dataclass(frozen=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 993
    security: str = "tls"  # tls: IMAPS (implicit TLS); starttls; none (loopback only)
    ca_file: str | None = None
    user: str = "cyrusadmin"
    password: str = field(default="", repr=False)
    folder: str = "LearnSpam"
    timeout: float = 30.0


@dataclass(frozen=True)
class LearnConfig:
    imap: ImapConfig = field(default_factory=ImapConfig)
    spamd: tuple[Address, ...] = (InetAddress("127.0.0.1", 783),)
    spamd_timeout: float = 60.0
    spamd_user: str | None = None
    after: str = "delete"  # delete | move
    move_to: str | None = None
    max_messages: int = 1000
    max_size: int = 512 * 1024
    log_file: str | None = None
    source: str = "<defaults>"


def _imap(reader: ConfigReader) -> ImapConfig:
    d = ImapConfig()
    security = reader.choice("security", d.security, SECURITY)
    default_port = 993 if security == "tls" else 143
    password = reader.optional_text("password")
    password_file = reader.optional_text("password_file")
    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            reader.problem("password_file", f"cannot read: {exc.strerror or exc}")
    if password is None and password_file is None:
        reader.problem("password_file", "the admin's password is needed (or imap.password)")
    config = ImapConfig(
        host=reader.text("host", d.host),
        port=reader.integer("port", default_port, minimum=1, maximum=65535),
        security=security,
        ca_file=reader.optional_text("ca_file"),
        user=reader.text("user", d.user),
        password=password or "",
        folder=reader.text("folder", d.folder),
        timeout=reader.seconds("timeout", d.timeout),
    )
    reader.finish()
    return config


def parse_learn_config(source: str, data: object) -> LearnConfig:
    top = ConfigReader(source, data)
    d = LearnConfig()
    imap = _imap(top.section("imap"))
    spamd = top.section("spamd")
    backends = []
    for text in spamd.text_list("backends", [str(a) for a in d.spamd]):
        try:
            backends.append(parse_address(text))
        except BackendAddressError as exc:
            spamd.problem("backends", str(exc))
    timeout = spamd.seconds("timeout", d.spamd_timeout)
    user = spamd.optional_text("user")
    spamd.finish()
    learn = top.section("learn")
    after = learn.choice("after", d.after, AFTER)
    move_to = learn.optional_text("move_to")
    if after == "move" and move_to is None:
        learn.problem("move_to", "learn.after: move needs the folder to move learned mail to")
    max_messages = learn.integer("max_messages", d.max_messages, minimum=1)
    max_size = learn.integer("max_size", d.max_size, minimum=1024)
    learn.finish()
    log_path = log_file(top)
    top.finish_document()
    return LearnConfig(
        imap=imap,
        spamd=tuple(backends) or d.spamd,
        spamd_timeout=timeout,
        spamd_user=user,
        after=after,
        move_to=move_to,
        max_messages=max_messages,
        max_size=max_size,
        log_file=log_path,
        source=source,
    )


def load_learn_config(path: str | Path) -> LearnConfig:
    source, data = load_yaml(path)
    return parse_learn_config(source, data)
