"""The policy service's config file (YAML), loaded into frozen, validated objects.

Problems are collected and reported together, each naming the file and the key. The LDAP bind
password is wrapped in `Secret`, whose text form is a mask, so neither `check-config` nor a log
line can print it by accident.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from milters.backend import Address, AddressError, InetAddress, UnixAddress, parse_address
from milters.config import metrics_address
from milters.configkit import ConfigError, ConfigReader, load_yaml

__all__ = [
    "LdapConfig",
    "MailboxConfig",
    "PolicyConfig",
    "RateLimitConfig",
    "RateLimits",
    "Secret",
    "load_policy_config",
    "parse_policy_config",
]

PROBE_FIELDS = ("uid", "address", "local", "domain")
DEFAULT_LMTP = UnixAddress("/run/cyrus/socket/lmtp")  # Debian's cyrus-imapd socket


class Secret:
    """A value that prints as a mask; `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "********"

    def __repr__(self) -> str:
        return "Secret('********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self  # immutable; lets dataclasses.asdict() keep the mask


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


@dataclass(frozen=True)
class MailboxConfig:
    lmtp: Address = DEFAULT_LMTP
    probe_recipient: str = "{uid}"
    helo: str = field(default_factory=socket.getfqdn)
    timeout: float = 5.0
    positive_ttl: float = 600.0
    negative_ttl: float = 60.0
    cache_size: int = 10000


@dataclass(frozen=True)
class RateLimits:
    """Per key and window; 0 means no limit."""

    messages: int = 0
    recipients: int = 0


@dataclass(frozen=True)
class RateLimitConfig:
    window: float = 3600.0
    max_keys: int = 100_000
    sasl_user: RateLimits = RateLimits(messages=200, recipients=1000)
    client_address: RateLimits = RateLimits()


@dataclass(frozen=True)
class PolicyConfig:
    listen: str = "inet:127.0.0.1:10040"
    local_domains: tuple[str, ...] = ()
    recipient_delimiter: str = ""
    workers: int = 8
    decision_timeout: float = 8.0
    max_request_bytes: int = 16 * 1024
    max_attributes: int = 100
    ldap: LdapConfig = field(default_factory=LdapConfig)
    mailbox: MailboxConfig = field(default_factory=MailboxConfig)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    log_file: str | None = None
    metrics_listen: InetAddress | None = None  # Prometheus endpoint; off when None
    source: str = "<defaults>"


def _password(reader: ConfigReader) -> Secret | None:
    inline = reader.optional_text("bind_password")
    path = reader.optional_text("bind_password_file")
    if inline is not None and path is not None:
        reader.problem("bind_password_file", "give bind_password or bind_password_file, not both")
        return None
    if path is None:
        return None if inline is None else Secret(inline)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reader.problem("bind_password_file", f"cannot read {path}: {exc.strerror or exc}")
        return None
    secret = text.rstrip("\r\n")
    if not secret:
        reader.problem("bind_password_file", f"{path} is empty")
        return None
    return Secret(secret)


def _ldap(reader: ConfigReader) -> LdapConfig:
    d = LdapConfig()
    uri = reader.text("uri", d.uri)
    if not uri.startswith(("ldap://", "ldaps://", "ldapi://")):
        reader.problem("uri", f"must start with ldap://, ldaps:// or ldapi://, got {uri!r}")
    base = reader.text("base", d.base)
    if not reader.has("base"):
        reader.problem("base", "is required (the search base, e.g. ou=people,dc=example,dc=org)")
    bind_dn = reader.optional_text("bind_dn")
    password = _password(reader)
    if password is not None and bind_dn is None:
        reader.problem("bind_dn", "is required when a bind password is given")
    user_filter = reader.text("user_filter", d.user_filter)
    if not (user_filter.startswith("(") and user_filter.endswith(")")):
        reader.problem("user_filter", f"must be an LDAP filter in parentheses, got {user_filter!r}")
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


def _mailbox(reader: ConfigReader) -> MailboxConfig:
    d = MailboxConfig(helo="")
    lmtp_text = reader.text("lmtp", str(d.lmtp))
    lmtp = d.lmtp
    try:
        lmtp = parse_address(lmtp_text)
    except AddressError as exc:
        reader.problem("lmtp", str(exc))
    template = reader.text("probe_recipient", d.probe_recipient)
    try:
        template.format(**{name: "x" for name in PROBE_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        reader.problem(
            "probe_recipient",
            f"{template!r}: may use only {{{'}, {'.join(PROBE_FIELDS)}}} ({exc!r})",
        )
    config = MailboxConfig(
        lmtp=lmtp,
        probe_recipient=template,
        helo=reader.optional_text("helo") or socket.getfqdn(),
        timeout=reader.seconds("timeout", d.timeout, minimum=0.1, maximum=60),
        positive_ttl=reader.seconds("positive_ttl", d.positive_ttl, minimum=0),
        negative_ttl=reader.seconds("negative_ttl", d.negative_ttl, minimum=0),
        cache_size=reader.integer("cache_size", d.cache_size, minimum=0),
    )
    reader.finish()
    return config


def _limits(reader: ConfigReader, default: RateLimits) -> RateLimits:
    limits = RateLimits(
        messages=reader.integer("messages", default.messages, minimum=0),
        recipients=reader.integer("recipients", default.recipients, minimum=0),
    )
    reader.finish()
    return limits


def _rate_limits(reader: ConfigReader) -> RateLimitConfig:
    d = RateLimitConfig()
    config = RateLimitConfig(
        window=reader.seconds("window", d.window, minimum=1),
        max_keys=reader.integer("max_keys", d.max_keys, minimum=1),
        sasl_user=_limits(reader.section("sasl_user"), d.sasl_user),
        client_address=_limits(reader.section("client_address"), d.client_address),
    )
    reader.finish()
    return config


def _domains(reader: ConfigReader) -> tuple[str, ...]:
    domains = tuple(d.lower().rstrip(".") for d in reader.text_list("local_domains", ()))
    if not reader.has("local_domains") or not domains:
        reader.problem("local_domains", "is required: the domains we are final destination for")
    for domain in domains:
        if "@" in domain or " " in domain or not domain:
            reader.problem("local_domains", f"{domain!r} is not a domain name")
    return domains


def parse_policy_config(source: str, data: object) -> PolicyConfig:
    top = ConfigReader(source, data)
    d = PolicyConfig()
    policy = top.section("policy")
    listen = policy.text("listen", d.listen)
    try:
        parse_address(listen)
    except AddressError as exc:
        policy.problem("listen", str(exc))
    # Like Postfix's recipient_delimiter: each character separates an address extension.
    delimiter = policy.optional_text("recipient_delimiter") or ""
    local_domains = _domains(policy)
    workers = policy.integer("workers", d.workers, minimum=1, maximum=256)
    decision_timeout = policy.seconds("decision_timeout", d.decision_timeout, minimum=0.1)
    max_request_bytes = policy.integer(
        "max_request_bytes", d.max_request_bytes, minimum=1024, maximum=1024 * 1024
    )
    max_attributes = policy.integer("max_attributes", d.max_attributes, minimum=10, maximum=1000)
    metrics_listen = metrics_address(policy, "metrics_listen")
    policy.finish()
    log = top.section("log")
    log_file = log.optional_text("file")
    log.finish()
    config = PolicyConfig(
        listen=listen,
        local_domains=local_domains,
        recipient_delimiter=delimiter,
        workers=workers,
        decision_timeout=decision_timeout,
        max_request_bytes=max_request_bytes,
        max_attributes=max_attributes,
        ldap=_ldap(top.section("ldap")),
        mailbox=_mailbox(top.section("mailbox")),
        rate_limits=_rate_limits(top.section("rate_limits")),
        log_file=log_file,
        metrics_listen=metrics_listen,
        source=source,
    )
    top.finish()
    if top.problems:
        raise ConfigError(top.problems)
    return config


def load_policy_config(path: str | Path) -> PolicyConfig:
    source, data = load_yaml(path)
    return parse_policy_config(source, data)
