"""`learn.yaml`: where the LearnSpam folder is, how to log in, which spamd learns.

A file of its own rather than keys in milter.yaml: it holds an IMAP admin password the milter
must not be able to read, and the spamd that learns (`--allow-tell`, Bayes on) may be another
instance than the one the milter scans with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from milters.common.configkit import ConfigReader, load_yaml, log_file
from milters.common.imap import ImapConfig, read_imap
from milters.common.sockets import Address, BackendAddressError, InetAddress, parse_address

AFTER = ("delete", "move")


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


def parse_learn_config(source: str, data: object) -> LearnConfig:
    top = ConfigReader(source, data)
    d = LearnConfig()
    imap = read_imap(top.section("imap"))
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
