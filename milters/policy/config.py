"""The policy service's config file (YAML), loaded into frozen, validated objects.

Problems are collected and reported together, each naming the file and the key. The LDAP bind
password is wrapped in `Secret`, whose text form is a mask, so neither `check-config` nor a log
line can print it by accident.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from milters.common.addresses import normal_domain
from milters.common.configkit import ConfigReader, load_yaml, log_file, metrics_address
from milters.common.ldapconfig import AliasConfig, LdapConfig, read_filter, read_ldap
from milters.common.mailman import MailmanApi, read_mailman
from milters.common.secrets import Secret
from milters.common.sockets import (
    Address,
    BackendAddressError,
    InetAddress,
    UnixAddress,
    parse_address,
)

__all__ = [
    "AliasConfig",
    "LdapConfig",
    "MailboxConfig",
    "PolicyConfig",
    "RateLimitConfig",
    "RateLimits",
    "Secret",
    "SenderRules",
    "load_policy_config",
    "parse_policy_config",
]

PROBE_FIELDS = ("uid", "address", "local", "domain")
DEFAULT_LMTP = UnixAddress("/run/cyrus/socket/lmtp")  # Debian's cyrus-imapd socket


@dataclass(frozen=True)
class MailboxConfig:
    lmtp: Address = DEFAULT_LMTP
    probe_recipient: str = "{uid}"
    helo: str = field(default_factory=socket.getfqdn)
    timeout: float = 5.0
    positive_ttl: float = 600.0
    negative_ttl: float = 60.0
    cache_size: int = 10000
    route_attribute: str | None = None  # a member's own mailstore in LDAP, e.g. mailHost


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
class SenderRules:
    """Who may use which envelope sender."""

    # Unauthenticated clients may not use a sender in our own domains (forgery from outside),
    # except from these networks (e.g. a list server re-injecting on loopback).
    local_requires_login: bool = True
    trusted_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # `MAIL FROM:<>` after AUTH: a user has no business sending bounces, and it dodges limits.
    refuse_null_sender_after_login: bool = True


@dataclass(frozen=True)
class ListsConfig:
    """Mailman's lists: their addresses (Mailman's own map) are known recipients, and on a
    members-only list only its members may post, asked of Mailman's REST API."""

    map: str
    members_only: tuple[str, ...] = ()  # list addresses, lower case
    mailman: MailmanApi | None = None  # needed to read the members-only lists' members
    roster_ttl: float = 60.0  # how long a list's members are reused before asking again


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
    aliases: AliasConfig | None = None  # None: no alias lookups (every non-user is unknown)
    lists: ListsConfig | None = None  # None: no mailing lists
    senders: SenderRules = field(default_factory=SenderRules)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    log_file: str | None = None
    metrics_listen: InetAddress | None = None  # Prometheus endpoint; off when None
    source: str = "<defaults>"


def _mailbox(reader: ConfigReader) -> MailboxConfig:
    d = MailboxConfig(helo="")
    lmtp_text = reader.text("lmtp", str(d.lmtp))
    lmtp = d.lmtp
    try:
        lmtp = parse_address(lmtp_text)
    except BackendAddressError as exc:
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
        route_attribute=reader.optional_text("route_attribute"),
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


def _aliases(top: ConfigReader) -> AliasConfig | None:
    present = top.has("aliases")
    reader = top.section("aliases")
    if not present:
        return None
    base = reader.text("base", "")
    if not base:
        reader.problem("base", "is required (the search base of the aliases)")
    d = AliasConfig(base="")
    config = AliasConfig(
        base=base,
        filter=read_filter(reader, "filter", d.filter),
        key_attribute=reader.text("key_attribute", d.key_attribute),
        member_attribute=reader.text("member_attribute", d.member_attribute),
        max_depth=reader.integer("max_depth", d.max_depth, minimum=1, maximum=32),
    )
    reader.finish()
    return config


def _senders(reader: ConfigReader) -> SenderRules:
    d = SenderRules()
    networks: list[IPv4Network | IPv6Network] = []
    for text in reader.text_list("trusted_networks", ()):
        try:
            networks.append(ip_network(text, strict=False))
        except ValueError as exc:
            reader.problem("trusted_networks", f"{text!r} is not a network: {exc}")
    rules = SenderRules(
        local_requires_login=reader.boolean("local_requires_login", d.local_requires_login),
        trusted_networks=tuple(networks),
        refuse_null_sender_after_login=reader.boolean(
            "refuse_null_sender_after_login", d.refuse_null_sender_after_login
        ),
    )
    reader.finish()
    return rules


def _domains(reader: ConfigReader) -> tuple[str, ...]:
    domains = tuple(normal_domain(d) for d in reader.text_list("local_domains", ()))
    if not reader.has("local_domains") or not domains:
        reader.problem("local_domains", "is required: the domains we are final destination for")
    for domain in domains:
        if "@" in domain or " " in domain or not domain:
            reader.problem("local_domains", f"{domain!r} is not a domain name")
    return domains


def _lists(top: ConfigReader) -> ListsConfig | None:
    if not top.has("lists"):
        return None
    reader = top.section("lists")
    path = reader.text("map", "")
    if not path:
        reader.problem("map", "is required (Mailman's map, /var/lib/mailman3/data/postfix_lmtp)")
    members_only = tuple(a.strip().lower() for a in reader.text_list("members_only", ()))
    for address in members_only:
        if "@" not in address or " " in address:
            reader.problem("members_only", f"{address!r} is not a list address")
    mailman = read_mailman(reader.section("mailman")) if reader.has("mailman") else None
    if members_only and mailman is None:
        reader.problem("mailman", "is required with members_only (to ask Mailman who is a member)")
    ttl = reader.seconds("roster_ttl", 60.0, minimum=0, maximum=3600)
    reader.finish()
    return ListsConfig(path, members_only, mailman, ttl)


def parse_policy_config(source: str, data: object) -> PolicyConfig:
    top = ConfigReader(source, data)
    d = PolicyConfig()
    policy = top.section("policy")
    listen = policy.text("listen", d.listen)
    try:
        parse_address(listen)
    except BackendAddressError as exc:
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
    log_path = log_file(top)
    config = PolicyConfig(
        listen=listen,
        local_domains=local_domains,
        recipient_delimiter=delimiter,
        workers=workers,
        decision_timeout=decision_timeout,
        max_request_bytes=max_request_bytes,
        max_attributes=max_attributes,
        ldap=read_ldap(top.section("ldap")),
        mailbox=_mailbox(top.section("mailbox")),
        aliases=_aliases(top),
        lists=_lists(top),
        senders=_senders(top.section("senders")),
        rate_limits=_rate_limits(top.section("rate_limits")),
        log_file=log_path,
        metrics_listen=metrics_listen,
        source=source,
    )
    top.finish_document()
    return config


def load_policy_config(path: str | Path) -> PolicyConfig:
    source, data = load_yaml(path)
    return parse_policy_config(source, data)
